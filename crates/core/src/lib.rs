//! starling-core (work in progress)
