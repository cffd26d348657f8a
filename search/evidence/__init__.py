"""Where does NetAug help? Paired arms over seeds, schedule lengths and base sizes, on real data.

    python -m search.evidence --out runs/evidence                 # run (or resume) the default grid
    python -m search.evidence --out runs/evidence --report        # tables and plot of what finished

Arms: `baseline` (plain training), `netaug` (every layer at the largest width; channel sorting
`netaug.sort` of the space, `all` by default as the official code), `netaug_sortaug` (the same with
`sort: augmented`: the base's own channels never move, so it measures what sorting is worth),
`netaug_rkd` (NetAug with the largest model as online RKD teacher, trained on its own CE),
`netaug_rkd_sampled` / `netaug_rkd_fwd` (the cheaper teachers, `rkd.teacher: sampled | max_fwd`) and
`netaug_rkd_astar` (NetAug+RKD whose largest model is the SPOS a*: a supernet trained on the same
data, then a uniform search with inherited weights). Every cell (base size x schedule length x arm
x seed) trains from scratch with `training.epochs` = the schedule length, so the learning-rate
schedule is complete in each. For one seed the arms start from the same base weights and see the
same batches. `--arm-seeds ARM=N` gives an arm fewer (or more) seeds than `--seeds`; arms run in
tiers (baseline and netaug first), so the comparisons a budget must finish come first.

Resumable: every finished cell is a Parquet fragment under OUT/cells, every running one keeps a
checkpoint per epoch under OUT/checkpoints; a rerun with the same OUT skips finished cells and
continues the others. Cells run cheapest first (plain and NetAug before the teacher arms), so a
budget that ends early leaves whole comparisons. Ctrl+C stops the workers; rerun to continue.
"""
