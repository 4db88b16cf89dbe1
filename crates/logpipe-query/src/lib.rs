//! SQL over the lake with DataFusion: tables, partition pruning, result formatting.
