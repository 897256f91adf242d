"""The compiler: frontends (checkpoints -> IR), passes (Graph -> Graph), mapping onto a target, the pipeline."""
