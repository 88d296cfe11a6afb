"""Datasets: MovingMNIST text-to-video, bouncing MovingMNIST, video folders, batching for ``fit``."""

from keras_vdiff.data.moving_mnist import MOTIONS, bouncing_mnist, caption, load_digit_images, moving_mnist
from keras_vdiff.data.pipelines import BucketedBatches, VideoBatches, fit_input, precompute_text, to_tf_dataset
from keras_vdiff.data.video_folder import VideoFolder, read_video, video_folder, write_video
