import pytest
import torch

from bmz_cosdd.nn.ladder_vae import LOGVAR_MAX, LOGVAR_MIN, LadderVAE, gaussian_kl


def _vae(**kw):
    torch.manual_seed(0)
    args = dict(in_channels=1, n_levels=4, latent_channels=4, features=8)
    args.update(kw)
    return LadderVAE(**args).eval()


def _eps(vae, batch, height, width, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, *shape, generator=g) for shape in vae.latent_shapes([height, width])]


@pytest.mark.parametrize(
    "mu_q,sd_q,mu_p,sd_p",
    [(0.0, 1.0, 0.0, 1.0), (0.5, 0.7, -0.2, 1.3), (2.0, 0.1, 0.0, 1.0), (-1.0, 2.0, 0.5, 0.5)],
)
def test_gaussian_kl_matches_monte_carlo(mu_q, sd_q, mu_p, sd_p):
    t = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    q = torch.distributions.Normal(t(mu_q), t(sd_q))
    p = torch.distributions.Normal(t(mu_p), t(sd_p))
    analytic = gaussian_kl(t(mu_q), 2 * torch.log(t(sd_q)), t(mu_p), 2 * torch.log(t(sd_p))).item()
    torch.manual_seed(0)
    z = q.sample((200_000,))
    mc = (q.log_prob(z) - p.log_prob(z)).mean().item()
    assert abs(analytic - torch.distributions.kl_divergence(q, p).item()) < 1e-12
    assert abs(mc - analytic) < 0.03 * analytic + 2e-3


def test_attributes_and_latent_shapes():
    vae = LadderVAE(2, n_levels=5, latent_channels=[3, 4, 5, 6, 7], features=8)
    assert vae.n_levels == 5
    assert vae.latent_channels == [3, 4, 5, 6, 7]
    assert vae.features == 8
    assert vae.downsample == [True, False, True, False, True]
    assert vae.size_step == 8
    assert vae.latent_shapes([32, 48]) == [[3, 16, 24], [4, 16, 24], [5, 8, 12], [6, 8, 12], [7, 4, 6]]
    every = LadderVAE(1, n_levels=3, latent_channels=2, features=4, downsample_every=1)
    assert every.downsample == [True, True, True] and every.size_step == 8
    never = LadderVAE(1, n_levels=3, latent_channels=2, features=4, downsample_every=0)
    assert never.downsample == [False, False, False] and never.size_step == 1
    with pytest.raises(ValueError):
        LadderVAE(1, n_levels=3, latent_channels=[2, 2], features=4)


def test_explicit_downsampling_pattern_keeps_level_zero_at_full_resolution():
    # The reference implementation's ladder at its default crop: level 0 at the input's resolution.
    vae = LadderVAE(1, n_levels=3, latent_channels=2, features=4, downsample_every=2, downsample=[0, 1, 1]).eval()
    assert vae.downsample == [False, True, True] and vae.size_step == 4
    assert vae.latent_shapes([16, 24]) == [[2, 16, 24], [2, 8, 12], [2, 4, 6]]
    features, kl = vae(torch.randn(1, 1, 16, 24))
    assert features.shape == (1, 4, 16, 24) and len(kl) == 3
    with pytest.raises(ValueError, match="downsample has 2 entries for 3 levels"):
        LadderVAE(1, n_levels=3, latent_channels=2, features=4, downsample=[True, True])


def test_parameter_count_in_line_with_reference():
    vae = LadderVAE(1, n_levels=8, latent_channels=32, features=64)
    n = sum(p.numel() for p in vae.parameters())
    assert 2_000_000 < n < 6_000_000


def test_runs_on_sizes_other_than_the_first_one():
    vae = _vae()
    for h, w in [(32, 32), (64, 96), (16, 80)]:
        x = torch.randn(2, 1, h, w)
        features, kl = vae(x)
        assert features.shape == (2, 8, h, w)
        assert len(kl) == 4
        for level_kl in kl:
            assert level_kl.shape == (2,)
            assert torch.isfinite(level_kl).all()
            assert torch.all(level_kl >= -1e-4)  # analytic KL >= 0 up to rounding
    with pytest.raises(ValueError):
        vae(torch.randn(1, 1, 34, 32))


def test_eps_and_use_mean_make_it_deterministic():
    vae = _vae()
    x = torch.randn(2, 1, 32, 48)
    bu = vae.bottom_up(x)
    eps = _eps(vae, 2, 32, 48)
    a, kl_a = vae.top_down(bu, eps)
    b, kl_b = vae.top_down(bu, [e.clone() for e in eps])
    assert torch.equal(a, b)
    for ka, kb in zip(kl_a, kl_b):
        assert torch.equal(ka, kb)
    c, _ = vae.top_down(bu, _eps(vae, 2, 32, 48, seed=1))
    assert not torch.allclose(a, c)
    # without eps the draws differ
    d, _ = vae.top_down(bu)
    e, _ = vae.top_down(bu)
    assert not torch.allclose(d, e)
    # posterior means everywhere: deterministic and eps is ignored
    means = [True] * vae.n_levels
    m1, _ = vae.top_down(bu, use_mean=means)
    m2, _ = vae.top_down(bu, eps, use_mean=means)
    assert torch.equal(m1, m2)
    # use_mean on some levels only: those levels ignore their eps
    partial = [True, False, True, False]
    eps2 = [e if i % 2 else torch.randn_like(e) for i, e in enumerate(eps)]
    p1, _ = vae.top_down(bu, eps, use_mean=partial)
    p2, _ = vae.top_down(bu, eps2, use_mean=partial)
    assert torch.equal(p1, p2)


def test_wrong_eps_shape_raises():
    vae = _vae()
    bu = vae.bottom_up(torch.randn(1, 1, 32, 32))
    eps = _eps(vae, 1, 32, 32)
    eps[0] = eps[0][..., :-1]
    with pytest.raises(ValueError):
        vae.top_down(bu, eps)


def test_repeated_bottom_up_equals_per_sample_runs():
    vae = _vae()
    b, n, h, w = 2, 3, 32, 32
    x = torch.randn(b, 1, h, w)
    bu = vae.bottom_up(x)
    eps = _eps(vae, n * b, h, w)
    # sample-major: row s * b + i is draw s of image i
    batched, kl = vae.top_down([t.repeat(n, 1, 1, 1) for t in bu], eps)
    for s in range(n):
        for i in range(b):
            row = s * b + i
            single, kl1 = vae.top_down(vae.bottom_up(x[i : i + 1]), [e[row : row + 1] for e in eps])
            assert torch.allclose(batched[row : row + 1], single, atol=1e-5)
            for level in range(vae.n_levels):
                assert torch.allclose(kl[level][row], kl1[level][0], rtol=1e-4, atol=1e-4)


def test_output_depends_on_input_only_through_latents():
    vae = _vae()
    h, w = 32, 32
    eps = _eps(vae, 1, h, w)
    x1, x2 = torch.randn(1, 1, h, w), torch.randn(1, 1, h, w)
    f1, _ = vae.top_down(vae.bottom_up(x1), eps)
    f2, _ = vae.top_down(vae.bottom_up(x2), eps)
    assert not torch.allclose(f1, f2)  # the input matters ...
    # ... but only through the posterior parameters: pin them and it no longer does
    pinned = {}

    def pin(module, args, out):
        return pinned.setdefault(module, torch.randn_like(out))

    for level in [vae.top, *vae.td_levels]:
        level.posterior.register_forward_hook(pin)
    g1, _ = vae.top_down(vae.bottom_up(x1), eps)
    g2, _ = vae.top_down(vae.bottom_up(x2), eps)
    assert torch.equal(g1, g2)


def test_training_step_has_finite_gradients():
    vae = _vae(dropout=0.1)
    vae.train()
    x = torch.randn(2, 1, 32, 32)
    features, kl = vae(x)
    loss = features.pow(2).mean() + sum(k.mean() for k in kl)
    loss.backward()
    grads = [p.grad for p in vae.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert vae.top.prior_mean.grad is not None  # the learned top prior is trained


def test_sample_prior():
    vae = _vae()
    a = vae.sample_prior(2, [32, 48], generator=torch.Generator().manual_seed(0))
    b = vae.sample_prior(2, [32, 48], generator=torch.Generator().manual_seed(0))
    assert a.shape == (2, 8, 32, 48)
    assert torch.equal(a, b)
    assert torch.isfinite(a).all()


def test_logvar_clamp_range():
    from bmz_cosdd.nn.ladder_vae import _split_gaussian

    assert LOGVAR_MIN < 0 < LOGVAR_MAX
    params = torch.tensor([0.0, 0.0, 1e6, -1e6]).reshape(1, 4, 1, 1)
    _, logvar = _split_gaussian(params, 2)
    assert logvar.flatten().tolist() == [LOGVAR_MAX, LOGVAR_MIN]
    vae = _vae()
    with torch.no_grad():
        vae.top.prior_logvar.fill_(1e6)
    _, kl = vae(torch.randn(1, 1, 32, 32))
    assert all(torch.isfinite(k).all() for k in kl)


def test_reparameterisation_uses_the_standard_deviation():
    from bmz_cosdd.nn.ladder_vae import _draw

    mu, logvar, eps = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    assert torch.allclose(_draw(mu, logvar, eps, False), mu + torch.exp(0.5 * logvar) * eps)
    assert torch.equal(_draw(mu, logvar, eps, True), mu)
    torch.manual_seed(0)
    big = _draw(torch.zeros(200_000), torch.full((200_000,), 2 * torch.log(torch.tensor(3.0)).item()), None, False)
    assert abs(big.std().item() / 3.0 - 1.0) < 0.02
