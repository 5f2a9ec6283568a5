"""Byzantine-robust aggregators that see every client update (Krum, Multi-Krum, Bulyan, the
geometric median), each declared as an `options.Option` in its own module and registered in
`fl_tff.aggregators.registry.AGGREGATORS` by one line."""
