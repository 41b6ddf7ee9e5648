//! starling-stream (work in progress)
