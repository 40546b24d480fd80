//! Seam control plane (being written).
