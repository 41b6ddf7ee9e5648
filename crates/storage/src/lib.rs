//! starling-storage (work in progress)
