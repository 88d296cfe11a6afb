"""Text encoders with one contract: ``encoder(texts) -> (text_embeddings (B, L, D), text_mask (B, L), pooled_text (B, D))``.

``SmallTextEncoder`` (with ``WordTokenizer``) is a small trainable encoder for
MovingMNIST-scale captions; ``CLIPTextAdapter`` and ``T5TextAdapter`` wrap
keras-hub's frozen CLIP and T5 text models.
"""

from keras_vdiff.text.keras_hub_adapters import CLIPTextAdapter, T5TextAdapter
from keras_vdiff.text.small_text_encoder import SmallTextEncoder
from keras_vdiff.text.word_tokenizer import WordTokenizer
from keras_vdiff.text.t5_encoder import T5Encoder, T5Tokenizer, UMT5Encoder
