//! starling-sasl (work in progress)
