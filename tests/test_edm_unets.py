"""EDM-compatible DDPM++ / ADM backbones: EDM's state_dict layout, parameter counts, forward values, and
Uni-Instruct's encoder/decoder split with its parameter-free discriminator head.

The EDM facts below were read from NVlabs/edm ``training/networks.py`` and ``train.py`` (commit 008a4e5) and checked
by building EDM's own ``EDMPrecond`` from that file. The golden values were produced by running EDM's network code
(and Uni-Instruct's ``EDMPrecond_EncoderDecoder``, a-little-hoof/Uni_Instruct commit 3cdf92e, for the logits) on the
deterministic weights and inputs defined here; our networks matched them to ≤ 1.3e-6 (fp32, CPU).
"""

import io
import math

import pytest
import torch

from uniinstruct.networks.edm_unets import (DhariwalUNet, EDMPrecondNet, SongUNet, adm_imagenet64,
                                            ddpmpp_cifar10)



# ---------------------------------------------------------------------------------------------------------------------
# (a) EDM's state_dict layout and parameter counts, on the meta device (no memory, no initialisation cost).

@pytest.fixture(scope="module")
def full_nets():
    with torch.device("meta"):
        return {"cifar_uncond": ddpmpp_cifar10(), "cifar_cond": ddpmpp_cifar10(label_dim=10),
                "imagenet": adm_imagenet64()}


# Key -> shape, as in EDM's checkpoints (state_dict of EDMPrecond). None = the key must be absent.
CIFAR_KEYS = {
    "model.map_layer0.weight": (512, 128), "model.map_layer0.bias": (512,), "model.map_layer1.weight": (512, 512),
    "model.map_augment.weight": (128, 9), "model.map_augment.bias": None,
    "model.enc.32x32_conv.weight": (128, 3, 3, 3), "model.enc.32x32_conv.bias": (128,),
    "model.enc.32x32_block0.norm0.weight": (128,), "model.enc.32x32_block0.conv0.weight": (256, 128, 3, 3),
    "model.enc.32x32_block0.affine.weight": (256, 512),            # no adaptive scale in DDPM++
    "model.enc.32x32_block0.skip.weight": (256, 128, 1, 1), "model.enc.32x32_block1.skip.weight": None,
    "model.enc.32x32_block0.qkv.weight": None,
    "model.enc.16x16_down.conv0.resample_filter": (1, 1, 2, 2), "model.enc.16x16_down.skip.weight": (256, 256, 1, 1),
    "model.enc.16x16_down.skip.resample_filter": (1, 1, 2, 2), "model.enc.16x16_block0.conv0.resample_filter": None,
    "model.enc.16x16_block0.norm2.weight": (256,), "model.enc.16x16_block0.qkv.weight": (768, 256, 1, 1),
    "model.enc.16x16_block0.qkv.bias": (768,), "model.enc.16x16_block3.proj.weight": (256, 256, 1, 1),
    "model.enc.8x8_block3.conv1.weight": (256, 256, 3, 3), "model.enc.8x8_block3.qkv.weight": None,
    "model.dec.8x8_in0.qkv.weight": (768, 256, 1, 1), "model.dec.8x8_in1.qkv.weight": None,
    "model.dec.8x8_block0.conv0.weight": (256, 512, 3, 3), "model.dec.8x8_block0.skip.weight": (256, 512, 1, 1),
    "model.dec.16x16_up.conv0.resample_filter": (1, 1, 2, 2), "model.dec.16x16_block3.qkv.weight": None,
    "model.dec.16x16_block4.qkv.weight": (768, 256, 1, 1), "model.dec.32x32_block4.conv0.weight": (256, 384, 3, 3),
    "model.dec.32x32_aux_norm.weight": (256,), "model.dec.32x32_aux_conv.weight": (3, 256, 3, 3),
    "model.dec.32x32_aux_conv.bias": (3,), "model.dec.16x16_aux_conv.weight": None,
}
IMAGENET_KEYS = {
    "model.map_layer0.weight": (768, 192), "model.map_layer1.bias": (768,), "model.map_label.weight": (768, 1000),
    "model.map_label.bias": None, "model.map_augment.weight": None,
    "model.enc.64x64_conv.weight": (192, 3, 3, 3), "model.enc.64x64_block0.affine.weight": (384, 768),  # scale+shift
    "model.enc.64x64_block0.qkv.weight": None, "model.enc.32x32_down.conv0.resample_filter": (1, 1, 2, 2),
    "model.enc.32x32_down.skip.resample_filter": (1, 1, 2, 2), "model.enc.32x32_down.skip.weight": None,
    "model.enc.32x32_block0.skip.weight": (384, 192, 1, 1), "model.enc.32x32_block0.qkv.weight": (1152, 384, 1, 1),
    "model.enc.32x32_block0.affine.weight": (768, 768), "model.enc.16x16_block0.qkv.weight": (1728, 576, 1, 1),
    "model.enc.8x8_block2.proj.weight": (768, 768, 1, 1),
    "model.dec.8x8_in0.qkv.weight": (2304, 768, 1, 1), "model.dec.8x8_in1.qkv.weight": None,
    "model.dec.8x8_block3.conv0.weight": (768, 1344, 3, 3), "model.dec.16x16_block0.conv0.weight": (576, 1344, 3, 3),
    "model.dec.64x64_block3.conv0.weight": (192, 384, 3, 3), "model.dec.64x64_block3.qkv.weight": None,
    "model.out_norm.weight": (192,), "model.out_conv.weight": (3, 192, 3, 3), "model.out_conv.bias": (3,),
}
# Number of state_dict entries and of resample_filter buffers in EDM's EDMPrecond for these configurations.
KEY_COUNTS = {"cifar_uncond": (425, 8), "cifar_cond": (427, 8), "imagenet": (553, 12)}


@pytest.mark.parametrize("name, facts", [("cifar_uncond", CIFAR_KEYS), ("cifar_cond", CIFAR_KEYS),
                                         ("imagenet", IMAGENET_KEYS)])
def test_state_dict_has_edm_keys_and_shapes(full_nets, name, facts):
    sd = full_nets[name].state_dict()
    for key, shape in facts.items():
        if shape is None:
            assert key not in sd, key
        else:
            assert key in sd and tuple(sd[key].shape) == shape, (key, tuple(sd[key].shape) if key in sd else None)
    if name == "cifar_cond":
        assert tuple(sd["model.map_label.weight"].shape) == (128, 10)
        assert tuple(sd["model.map_label.bias"].shape) == (128,)
    if name == "cifar_uncond":
        assert "model.map_label.weight" not in sd
    assert all(k.startswith("model.") for k in sd)
    assert (len(sd), sum(k.endswith("resample_filter") for k in sd)) == KEY_COUNTS[name]


# Independent count from EDM's architecture description (no module is built): a UNetBlock(in, out) has norm0 (2·in),
# conv0 (9·in·out + out), affine (emb·k·out + k·out, k = 2 with adaptive scale), norm1 (2·out), conv1 (9·out² + out),
# a skip (in·out + out) when the width changes or, in DDPM++, when resampling, and with attention norm2 (2·out),
# qkv (3·out² + 3·out) and proj (out² + out).
def _block(cin, cout, emb, attn=False, resample=False, adaptive=False, resample_proj=True):
    n = 2 * cin + 9 * cin * cout + cout + (emb + 1) * cout * (2 if adaptive else 1) + 2 * cout + 9 * cout * cout + cout
    if cin != cout or (resample and resample_proj):
        n += cin * cout + cout
    if attn:
        n += 2 * cout + 3 * cout * cout + 3 * cout + cout * cout + cout
    return n


def _ddpmpp_count(label_dim, augment_dim=9):
    """DDPM++ CIFAR-10: 128 base channels, widths 256 at 32/16/8 px, 4 blocks per level, attention at 16 px."""
    e = 512
    b = lambda cin, cout, **kw: _block(cin, cout, e, **kw)                                     # noqa: E731
    n = (label_dim * 128 + 128 if label_dim else 0) + augment_dim * 128 + (128 * e + e) + (e * e + e)
    n += 3 * 128 * 9 + 128                                                                       # 32x32_conv
    n += b(128, 256) + 3 * b(256, 256)                                                           # 32x32 blocks
    n += b(256, 256, resample=True) + 4 * b(256, 256, attn=True)                                 # 16x16
    n += b(256, 256, resample=True) + 4 * b(256, 256)                                            # 8x8
    n += b(256, 256, attn=True) + b(256, 256) + 5 * b(512, 256)                                  # dec 8x8
    n += b(256, 256, resample=True) + 4 * b(512, 256) + b(512, 256, attn=True)                   # dec 16x16
    n += b(256, 256, resample=True) + 4 * b(512, 256) + b(384, 256)                              # dec 32x32
    return n + 2 * 256 + (256 * 3 * 9 + 3)                                                       # aux_norm, aux_conv


def _adm_count():
    """ADM ImageNet-64: widths 192/384/576/768 at 64/32/16/8 px, 3 blocks per level, attention at 32, 16, 8 px."""
    e = 768
    b = lambda cin, cout, **kw: _block(cin, cout, e, adaptive=True, resample_proj=False, **kw)  # noqa: E731
    n = (192 * e + e) + (e * e + e) + 1000 * e + (3 * 192 * 9 + 192)
    n += 3 * b(192, 192)
    n += b(192, 192, resample=True) + b(192, 384, attn=True) + 2 * b(384, 384, attn=True)
    n += b(384, 384, resample=True) + b(384, 576, attn=True) + 2 * b(576, 576, attn=True)
    n += b(576, 576, resample=True) + b(576, 768, attn=True) + 2 * b(768, 768, attn=True)
    n += b(768, 768, attn=True) + b(768, 768) + 3 * b(1536, 768, attn=True) + b(1344, 768, attn=True)
    n += b(768, 768, resample=True) + b(1344, 576, attn=True) + 2 * b(1152, 576, attn=True) + b(960, 576, attn=True)
    n += b(576, 576, resample=True) + b(960, 384, attn=True) + 2 * b(768, 384, attn=True) + b(576, 384, attn=True)
    n += b(384, 384, resample=True) + b(576, 192) + 3 * b(384, 192)
    return n + 2 * 192 + (192 * 3 * 9 + 3)                                                       # out_norm, out_conv


def test_parameter_counts_equal_edm(full_nets):
    count = {k: sum(p.numel() for p in net.parameters()) for k, net in full_nets.items()}
    # Exact counts of EDM's EDMPrecond (also measured on EDM's own networks.py) and the independent formula.
    assert count == {"cifar_uncond": 55_733_891, "cifar_cond": 55_735_299, "imagenet": 295_899_267}
    assert count == {"cifar_uncond": _ddpmpp_count(0), "cifar_cond": _ddpmpp_count(10), "imagenet": _adm_count()}
    # Published, rounded: DDPM++ CIFAR-10 55.7 M, ADM ImageNet-64 296 M.
    assert abs(count["cifar_cond"] / 55.7e6 - 1) < 1e-3 and abs(count["imagenet"] / 296e6 - 1) < 1e-3


def test_full_size_state_dicts_load_strictly(full_nets):
    with torch.device("meta"):
        for name, fresh in [("cifar_uncond", ddpmpp_cifar10()), ("cifar_cond", ddpmpp_cifar10(label_dim=10)),
                            ("imagenet", adm_imagenet64())]:
            result = fresh.load_state_dict(full_nets[name].state_dict(), strict=True, assign=True)
            assert not result.missing_keys and not result.unexpected_keys
        with pytest.raises(RuntimeError, match="Missing key"):     # conditional keys do not fit an unconditional net
            ddpmpp_cifar10(label_dim=10).load_state_dict(full_nets["cifar_uncond"].state_dict(), strict=True)


def test_bottleneck_is_the_last_encoder_block(full_nets):
    for name, last, width in [("cifar_cond", "8x8_block3", 256), ("imagenet", "8x8_block2", 768)]:
        unet = full_nets[name].model
        assert list(unet.enc)[-1] == last and unet.enc[last].out_channels == width
        assert unet.bottleneck_resolution == 8
    assert [blk.num_heads for blk in full_nets["imagenet"].model.enc.values() if getattr(blk, "num_heads", 0)] == \
        [6] * 3 + [9] * 3 + [12] * 3                                # 64 channels per head
    assert {blk.num_heads for blk in full_nets["cifar_cond"].model.modules() if getattr(blk, "num_heads", 0)} == {1}


# ---------------------------------------------------------------------------------------------------------------------
# (b) forward/backward on tiny networks.

TINY = {
    "song_uncond": dict(model_type="SongUNet", img_resolution=16, img_channels=3, model_channels=16,
                        channel_mult=[1, 2, 2], num_blocks=1, attn_resolutions=[8], augment_dim=9),
    "song_cond_8px": dict(model_type="SongUNet", img_resolution=8, img_channels=3, label_dim=10, model_channels=16,
                          channel_mult=[2, 2], num_blocks=2, attn_resolutions=[4]),
    "adm_cond": dict(model_type="DhariwalUNet", img_resolution=16, img_channels=3, label_dim=5, model_channels=16,
                     channel_mult=[1, 2, 3], num_blocks=1, attn_resolutions=[8, 4], channels_per_head=8,
                     augment_dim=9),
}


def _labels(net, n):
    return torch.eye(net.label_dim)[torch.arange(n) % net.label_dim] if net.label_dim else None


def _perturb(params, seed, scale=0.05):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in params:
            p.add_(scale * torch.randn(p.shape, generator=gen))


@pytest.mark.parametrize("name", TINY)
def test_tiny_forward_backward(name):
    torch.manual_seed(0)
    net = EDMPrecondNet(**TINY[name]).train()
    _perturb(net.parameters(), 0)          # ADM's zero-initialised output layers would block gradients upstream
    r, b = net.img_resolution, 3
    x, sigma = torch.randn(b, 3, r, r), torch.tensor([0.01, 1.0, 80.0])
    aug = torch.randn(b, 9) if net.model.augment_dim else None
    y, logits = net(x, sigma, _labels(net, b), augment_labels=aug, return_logits=True)
    rb = r // 2 ** (len(TINY[name]["channel_mult"]) - 1)
    assert y.shape == x.shape and y.dtype == torch.float32
    assert logits.shape == (b, 1, rb, rb) == (b, 1, net.model.bottleneck_resolution, net.model.bottleneck_resolution)
    (y.square().mean() + logits.square().mean()).backward()
    for pname, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, pname
    if name == "adm_cond":
        assert any(blk.num_heads > 1 for blk in net.model.modules() if isinstance(getattr(blk, "num_heads", None), int))


def test_encode_decode_equals_forward():
    torch.manual_seed(1)
    net = EDMPrecondNet(**TINY["song_cond_8px"]).eval()
    unet = net.model
    x, c_noise, labels = torch.randn(2, 3, 8, 8), torch.tensor([-1.0, 0.5]), _labels(unet, 2)
    h, skips, emb = unet.encode(x, c_noise, labels)
    n_skips = len(skips)
    out = unet.decode(h, skips, emb)
    assert len(skips) == n_skips and skips[-1] is h                 # decode leaves the caller's skips alone
    assert h.shape == (2, 32, 4, 4) and emb.shape == (2, 64)
    ref, logits = unet(x, c_noise, labels, return_logits=True)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    torch.testing.assert_close(logits, h.mean(dim=1, keepdim=True), rtol=0, atol=0)
    torch.testing.assert_close(unet.encoder_logits(x, c_noise, labels), logits, rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------------------------------
# (c) strict round trip through a saved state_dict.

@pytest.mark.parametrize("name", TINY)
def test_state_dict_round_trip_is_strict_and_exact(name):
    torch.manual_seed(2)
    a = EDMPrecondNet(**TINY[name])
    _perturb(a.parameters(), 1)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    torch.manual_seed(3)
    b = EDMPrecondNet(**TINY[name])
    result = b.load_state_dict(torch.load(buf, weights_only=True), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    a.eval(), b.eval()
    x, sigma = torch.randn(2, 3, a.img_resolution, a.img_resolution), torch.tensor([0.3, 5.0])
    ya, la = a(x, sigma, _labels(a, 2), return_logits=True)
    yb, lb = b(x, sigma, _labels(b, 2), return_logits=True)
    torch.testing.assert_close((ya, la), (yb, lb), rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------------------------------
# (d) the discriminator head: no parameters, a function of the encoder only.

@pytest.mark.parametrize("name", TINY)
def test_discriminator_head_is_parameter_free_and_reads_the_encoder_only(name):
    torch.manual_seed(4)
    net = EDMPrecondNet(**TINY[name]).eval()
    unet = net.model
    _perturb(net.parameters(), 2)
    enc = [p for n, p in unet.named_parameters() if n.startswith(("map_", "enc."))]
    dec = [p for n, p in unet.named_parameters() if not n.startswith(("map_", "enc."))]
    assert sum(p.numel() for p in enc) + sum(p.numel() for p in dec) == sum(p.numel() for p in net.parameters())
    assert {n.split(".")[0] for n, _ in unet.named_parameters()} <= {
        "map_label", "map_augment", "map_layer0", "map_layer1", "enc", "dec", "out_norm", "out_conv"}

    x, sigma = torch.randn(2, 3, net.img_resolution, net.img_resolution), torch.tensor([0.5, 2.0])
    labels = _labels(unet, 2)
    y, logits = net(x, sigma, labels, return_logits=True)
    torch.testing.assert_close(net.encoder_logits(x, sigma, labels), logits, rtol=0, atol=0)
    logits.sum().backward()                                  # the logits' graph never touches the decoder
    assert all(p.grad is None for p in dec) and any(p.grad is not None and p.grad.abs().sum() > 0 for p in enc)

    _perturb(dec, 3, scale=0.5)
    y2, logits2 = net(x, sigma, labels, return_logits=True)
    torch.testing.assert_close(logits2, logits, rtol=0, atol=0)
    assert (y2 - y).abs().max() > 1e-3
    _perturb(enc, 4, scale=0.5)
    assert (net(x, sigma, labels, return_logits=True)[1] - logits).abs().max() > 1e-6


# ---------------------------------------------------------------------------------------------------------------------
# Forward values of EDM's own code (golden values) and the preconditioning.

def _fill_deterministic(net):
    with torch.no_grad():
        for i, (_, p) in enumerate(sorted(net.named_parameters())):
            k = torch.arange(p.numel(), dtype=torch.float64)
            fan = p[0].numel() if p.ndim > 1 else 4
            p.copy_((torch.sin(0.7 * k + 1.3 * i) / math.sqrt(fan)).reshape(p.shape))


def _golden_inputs(res, label_dim, aug):
    n = 2 * 3 * res * res
    x = torch.cos(0.05 * torch.arange(n, dtype=torch.float64) ** 1.1).reshape(2, 3, res, res).float()
    labels = torch.eye(label_dim)[[1, label_dim - 1]] if label_dim else None
    augment = torch.sin(torch.arange(2 * aug, dtype=torch.float32)).reshape(2, aug) if aug else None
    return x, torch.tensor([0.2, 2.0]), labels, augment


GOLDEN = {
    "song": (dict(model_type="SongUNet", img_resolution=16, img_channels=3, label_dim=10, augment_dim=9,
                  model_channels=16, channel_mult=[1, 2, 2], num_blocks=1, attn_resolutions=[8], dropout=0.13),
             [[-0.1360243856906891, -0.21712836623191833, -0.2925403118133545, -0.36417537927627563],
              [0.19345533847808838, 0.1925475299358368, 0.18768468499183655, 0.18107829988002777]],
             [34.52894592285156, 99.08308410644531],
             [[-0.014799941331148148, -0.014470705762505531, -0.013858642429113388],
              [-0.014741575345396996, -0.014332324266433716, -0.013701124116778374]],
             [-0.21576595306396484, -0.21505439281463623]),
    "adm": (dict(model_type="DhariwalUNet", img_resolution=16, img_channels=3, label_dim=5, augment_dim=0,
                 model_channels=32, channel_mult=[1, 2, 4], num_blocks=1, attn_resolutions=[8, 4], dropout=0.1),
            [[-0.23110413551330566, -0.30264967679977417, -0.38137343525886536, -0.45716091990470886],
             [-0.09885048866271973, -0.10881461203098297, -0.11675392836332321, -0.1233552023768425]],
            [-37.38746643066406, -88.36363220214844],
            [[-0.022877058014273643, -0.022885145619511604, -0.022729847580194473],
             [-0.02285810559988022, -0.022870969027280807, -0.02272261120378971]],
            [-0.3673664927482605, -0.36632925271987915]),
}


@pytest.mark.parametrize("name", GOLDEN)
def test_forward_matches_edm_golden_values(name):
    cfg, d_row, d_sum, logit_row, logit_sum = GOLDEN[name]
    net = EDMPrecondNet(**cfg).eval()
    _fill_deterministic(net)
    x, sigma, labels, augment = _golden_inputs(cfg["img_resolution"], cfg["label_dim"], cfg["augment_dim"])
    with torch.no_grad():
        d, logits = net(x, sigma, labels, augment_labels=augment, return_logits=True)
    assert logits.shape == (2, 1, 4, 4)
    torch.testing.assert_close(d[:, 1, 3, :4], torch.tensor(d_row), rtol=0, atol=2e-5)
    torch.testing.assert_close(d.sum(dim=(1, 2, 3)), torch.tensor(d_sum), rtol=0, atol=2e-3)
    torch.testing.assert_close(logits[:, 0, 1, :3], torch.tensor(logit_row), rtol=0, atol=1e-6)
    torch.testing.assert_close(logits.sum(dim=(1, 2, 3)), torch.tensor(logit_sum), rtol=0, atol=1e-5)


def test_preconditioning_is_edms():
    torch.manual_seed(5)
    net = EDMPrecondNet(**TINY["adm_cond"]).eval()      # ADM's output conv starts at exactly zero
    x, sigma = torch.randn(3, 3, 16, 16), torch.tensor([0.002, 0.5, 80.0])
    seen = {}
    net.model.map_noise.register_forward_hook(lambda mod, args, out: seen.update(c_noise=args[0]))
    c_skip = (0.25 / (sigma**2 + 0.25))[:, None, None, None]
    torch.testing.assert_close(net(x, sigma, _labels(net, 3)), c_skip * x, rtol=0, atol=0)
    torch.testing.assert_close(seen["c_noise"], sigma.log() / 4)

    _perturb(net.parameters(), 5)
    net.model.map_noise._forward_hooks.clear()
    captured = {}
    orig = net.model.decode
    net.model.decode = lambda h, skips, emb: captured.setdefault("F", orig(h, skips, emb))
    d = net(x, sigma, _labels(net, 3))
    c_out = (sigma * 0.5 / (sigma**2 + 0.25).sqrt())[:, None, None, None]
    torch.testing.assert_close(d, c_skip * x + c_out * captured["F"])


def test_labels_follow_edm_conventions():
    torch.manual_seed(6)
    cond = EDMPrecondNet(**TINY["song_cond_8px"]).eval()
    _perturb(cond.parameters(), 6)
    x, sigma = torch.randn(2, 3, 8, 8), torch.tensor([0.4, 1.5])
    torch.testing.assert_close(cond(x, sigma), cond(x, sigma, torch.zeros(2, 10)), rtol=0, atol=0)
    assert (cond(x, sigma, torch.eye(10)[[0, 1]]) - cond(x, sigma, torch.eye(10)[[7, 8]])).abs().max() > 1e-5
    with pytest.raises(ValueError, match="class-conditional"):
        cond.model(x, sigma.log() / 4)
    uncond = EDMPrecondNet(**TINY["song_uncond"]).eval()
    x16 = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(uncond(x16, sigma), uncond(x16, sigma, torch.eye(10)[[0, 1]]), rtol=0, atol=0)
    # augmentation labels enter only when given (EDM: zero vector at sampling time = none)
    _perturb(uncond.parameters(), 7)
    torch.testing.assert_close(uncond(x16, sigma), uncond(x16, sigma, augment_labels=torch.zeros(2, 9)))


@pytest.mark.parametrize("option", [dict(embedding_type="fourier"), dict(encoder_type="residual"),
                                    dict(encoder_type="skip"), dict(decoder_type="skip")])
def test_ncsnpp_paths_are_not_implemented(option):
    with pytest.raises(NotImplementedError, match="DDPM\\+\\+"):
        SongUNet(img_resolution=8, in_channels=3, out_channels=3, model_channels=16, channel_mult=[1, 2], **option)
    with pytest.raises(ValueError):
        SongUNet(img_resolution=8, in_channels=3, out_channels=3, embedding_type="learned")


def test_unknown_model_type_is_refused():
    with pytest.raises(ValueError, match="model_type"):
        EDMPrecondNet(img_resolution=8, img_channels=3, model_type="EDM2UNet")
    assert isinstance(EDMPrecondNet(img_resolution=8, img_channels=3, model_type="DhariwalUNet", model_channels=16,
                                    channel_mult=[1, 2], num_blocks=1, attn_resolutions=[]).model, DhariwalUNet)


def test_attention_feeds_contiguous_heads_and_equals_softmax_attention(monkeypatch):
    """The fused SDPA kernels need 4-D inputs with unit stride on the channel axis; the block's output equals EDM's
    explicit softmax(qᵀk/√c) v attention (float64, so round-off is 1e-12)."""
    import torch.nn.functional as F

    from uniinstruct.networks import edm_unets

    torch.manual_seed(0)
    block = edm_unets.UNetBlock(64, 64, 16, attention=True, channels_per_head=32).double()
    with torch.no_grad():
        for p in block.parameters():
            p.add_(0.1 * torch.randn_like(p))           # EDM zero-initialises the projection: make it matter
    x, emb = torch.randn(2, 64, 4, 4, dtype=torch.float64), torch.randn(2, 16, dtype=torch.float64)
    strides = []
    sdpa = F.scaled_dot_product_attention

    def recording(q, k, v, *args, **kwargs):
        strides.append((q.dim(), q.stride(-1), k.stride(-1), v.stride(-1)))
        return sdpa(q, k, v, *args, **kwargs)

    monkeypatch.setattr(edm_unets.F, "scaled_dot_product_attention", recording)
    fused = block._attend(x)
    assert strides == [(4, 1, 1, 1)]            # [batch, heads, pixels, channels], channels contiguous
    b, c, h, w = x.shape
    q, k, v = block.qkv(block.norm2(x)).reshape(b * 2, c // 2, 3, h * w).unbind(2)
    weights = torch.softmax(torch.einsum("ncq,nck->nqk", q, k) / (c // 2) ** 0.5, dim=2)
    explicit = block.proj(torch.einsum("nqk,nck->ncq", weights, v).reshape(b, c, h, w))
    assert torch.allclose(fused, explicit, rtol=1e-10, atol=1e-12)
