//! starling-e2e (work in progress)
