//! starling-proto (work in progress)
