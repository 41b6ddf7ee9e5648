//! starling-modules (work in progress)
