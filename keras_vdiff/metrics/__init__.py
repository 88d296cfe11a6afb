"""Evaluation of generated videos: Frechet distance (FVD/FID), KVD, SSIM, PSNR,
CLIP similarity and conditional accuracy, with streaming feature statistics.

Metric arithmetic is float64 numpy on host memory; only the feature networks
(I3D, the MovingMNIST classifier, CLIP) run through Keras on the chosen backend.
"""

from keras_vdiff.metrics.clip_similarity import KerasHubCLIPEncoder, clip_similarity
from keras_vdiff.metrics.conditional_accuracy import conditional_accuracy, conditional_accuracy_table
from keras_vdiff.metrics.feature_statistics import (
    FeatureStatistics,
    compute_feature_statistics,
    extract_features,
    frechet_video_distance,
)
from keras_vdiff.metrics.frechet import frechet_distance, symmetric_sqrtm
from keras_vdiff.metrics.i3d import I3D, pytorch_i3d_weight_names
from keras_vdiff.metrics.image_quality import psnr, ssim
from keras_vdiff.metrics.kernel_distance import kernel_distance, kernel_video_distance
from keras_vdiff.metrics.moving_mnist_classifier import MovingMNISTClassifier, augment_like_samples
