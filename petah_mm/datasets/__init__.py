from .food101 import Food101WithVal
from .mnist_5k import load_mnist_5k, make_digit_classification
from .real_silhouettes import (ANIMAL_CLASSES, load_animal_mnist, make_animal_classification,
                               make_animal_plain_classification, make_animal_silhouettes)
from .toy_backbone import make_toy_backbone
from .toy_configs import TOY_CONFIGS, write_toy_user_config
from .toy_data import make_toy_ade20k, make_toy_classification, make_toy_coco

__all__ = [
    'ANIMAL_CLASSES', 'Food101WithVal', 'TOY_CONFIGS', 'load_animal_mnist', 'load_mnist_5k',
    'make_animal_classification', 'make_animal_plain_classification',
    'make_animal_silhouettes', 'make_digit_classification', 'make_toy_ade20k', 'make_toy_backbone',
    'make_toy_classification', 'make_toy_coco', 'write_toy_user_config'
]
