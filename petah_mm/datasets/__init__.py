from .food101 import Food101WithVal
from .toy_backbone import make_toy_backbone
from .toy_configs import TOY_CONFIGS, write_toy_user_config
from .toy_data import make_toy_ade20k, make_toy_classification, make_toy_coco

__all__ = ['Food101WithVal', 'TOY_CONFIGS', 'make_toy_ade20k', 'make_toy_backbone', 'make_toy_classification',
           'make_toy_coco', 'write_toy_user_config']
