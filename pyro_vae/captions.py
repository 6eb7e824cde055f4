"""The figures a run draws, by file stem (``figures/<split>/<stem>.png``, or ``figures/`` for
those of the whole run), with their captions: the one list that the run directory's layout
(:mod:`pyro_vae.rundir`), the figures (:mod:`pyro_vae.figures`) and the report use."""

CAPTIONS = {
    "training_curves": "Training curves: ELBO, KL and reconstruction terms, KL weight β and "
    "learning rate against the optimizer step (validation points per epoch).",
    "prior_samples": "Samples from the model: decoder means E[x|z] for z ~ p(z).",
    "reconstructions": "Reconstructions: data rows above decoder means at the posterior mean "
    "E_q[z|x].",
    "traversals": "Latent traversals: one row per most active dimension u (ranked by "
    "Cov_x(E_q[z_u|x])), swept over ±3 aggregate-posterior standard deviations "
    "around one data point's posterior mean.",
    "latent_map": "Latent map: posterior means E_q[z|x] (on their first two principal axes when "
    "D > 2, against the posterior standard deviation when D = 1).",
    "interpolation": "Interpolation: decoder means along the line between the posterior means "
    "of two data points (shown at both ends), one pair per row.",
    "samples_vs_data": "Model samples and data on the data's first two principal axes.",
    "ais": "Importance sampling against annealed importance sampling, per data point (identity "
    "line dashed), and the histogram of the gap AIS − IS: how loose the IS bound is.",
    "bdmc": "BDMC on data simulated from the model: the stochastic lower (forward AIS) and "
    "upper (reverse AIS) bounds per point, and the histogram of their gap.",
    "log_px": "Histograms of the importance-sampled log p(x) per data point (a stochastic lower "
    "bound) and of each point's effective sample size of its K weights.",
    "compare": "ELBO estimators compared on one model: their bounds with ±1 standard error, "
    "gradient signal-to-noise ratios and times.",
    "probe": "Linear probe: test accuracy of a logistic regression on the posterior means "
    "E_q[z|x] and on the pixels, against the number of labelled training items (log scale).",
}
