//! starling-c2s (work in progress)
