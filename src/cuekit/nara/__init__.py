"""NARA (Yoo et al., arXiv 1910.06705): confidence-guided approximation that accelerates AR sampling.

A prior predictor proposes K future tokens at once (an MLP on the last tokens, or Medusa-style heads on
the mother's last hidden state), one parallel pass of the mother AR model scores
them, a confidence predictor (or an exact / speculative rule) keeps a prefix, and the loop repeats.
"""
from cuekit.nara.mother import (
                                CausalTransformerLM,
                                MarkovMother,
                                MotherModel,
                                PixelCNN,
                                PixelCNNMother,
                                TransformerMother,
)
from cuekit.nara.predictors import (
                                ConfidencePredictor,
                                HiddenStatePrior,
                                MotherProbabilityConfidence,
                                OraclePrior,
                                PriorPredictor,
                                confidence_features,
)
from cuekit.nara.sampler import MODES, SampleResult, gumbel_noise, nara_sample, sample_sequential

__all__ = [
    "CausalTransformerLM", "MarkovMother", "MotherModel", "PixelCNN", "PixelCNNMother", "TransformerMother",
    "ConfidencePredictor", "HiddenStatePrior", "MotherProbabilityConfidence", "OraclePrior", "PriorPredictor",
    "confidence_features",
    "MODES", "SampleResult", "gumbel_noise", "nara_sample", "sample_sequential",
]
