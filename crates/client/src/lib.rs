//! starling-client (work in progress)
