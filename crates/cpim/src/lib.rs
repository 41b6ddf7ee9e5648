//! starling-cpim (work in progress)
