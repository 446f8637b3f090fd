"""Pure train steps: (state, batch, rng, *, deps) -> (state, metrics).

No TensorFlow, clu or ml_collections here: these functions run on any JAX install. They
are jit-compiled once, in `mpl_jax.compiled`, with shardings and the state donated.

- `settings`: `StepDeps`, what a step needs besides its arguments: the networks it runs
  and updates (`Network`: apply function, optimizer, learning-rate schedule) and the
  method's settings (`UdaSettings`, `MplSettings`, label smoothing, ...).
- `common`: the pieces every step shares (an optimizer update, a supervised update, the
  supervised + UDA loss, the EMA and step counter).
- `baselines`: supervised, UDA, pseudo labels (teacher pretraining, then the student),
  finetuning.
- `mpl`: the Meta Pseudo Labels step, numbered as docs/METHOD.md, section 2 (steps 3-5
  are the estimator's, `mpl_jax.estimators`), and the same helpers over micro-batches.

A batch is a dict of arrays: `labeled_x`, `labeled_y`, `unlabeled_weak`,
`unlabeled_strong`, and optionally `unlabeled_y` (true labels of the "unlabeled" data,
used only for the logged pseudo-label accuracy, never for training). Reduced MPL adds
`teacher_labeled_x` and `teacher_unlabeled_x`, what its teacher reads in place of the
images (`methods.TeacherInput`).
"""
