"""Datasets: MovingMNIST text-to-video, bouncing MovingMNIST, video folders."""

from keras_vdiff.data.moving_mnist import MOTIONS, bouncing_mnist, caption, load_digit_images, moving_mnist
