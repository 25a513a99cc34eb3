"""Statistics: pure functions of arrays (Gamma method, cumulants, reweighting, ESS, log Z)."""
