"""The matrix-factorisation and floor models, one file each (registered in
:mod:`autorec.models.registry`, the one registry; importing this package imports no framework).

==================  =========  =============================================================
name                backend    what
==================  =========  =============================================================
global-mean         numpy      the mean training rating (:mod:`baselines.simple`)
bias-only           numpy      mu + b_u + b_i, alternating closed-form ridge updates
als                 numpy      biased MF by alternating least squares (:mod:`baselines.als`)
biased-mf           numpy      Funk / surprise-SVD SGD, vectorised minibatches (:mod:`baselines.sgd`)
                    torch      same model, Adam (default) or plain SGD (:mod:`baselines.mf_torch`)
d2l-mf              torch      the D2L chapter's MF, MXNet semantics re-implemented
                    mxnet      the D2L chapter's MF in Gluon, as the chapter trains it
surprise-svd        surprise   scikit-surprise's SVD on our split (:mod:`baselines.surprise_models`)
surprise-svdpp      surprise   scikit-surprise's SVD++ on our split
bayesian-mf         myfm       Bayesian MF by Gibbs sampling, user/item one-hot (:mod:`baselines.bayes`)
bayesian-svdpp      myfm       the same plus SVD++-style implicit features from the train part
==================  =========  =============================================================
"""
