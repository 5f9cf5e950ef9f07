"""Where the loss comes from: one prediction (:mod:`.explain`), a dataset's diagnostics
(:mod:`.diagnostics`), a trained run on one of its splits (:mod:`.run_evaluation`), the figures
(:mod:`.plots`) and the HTML report (:mod:`.report`).

Import the modules themselves; this package imports nothing, so that the NumPy-only modules
(``explain``, ``diagnostics``) load without torch or matplotlib.
"""
