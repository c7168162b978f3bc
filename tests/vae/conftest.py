import pytest

from rnnforge.vae.train import VAETrainConfig

WORDS = "the quick brown fox jumps over lazy dog pack my box with five dozen liquor jugs".split()


def toy_lines(n=80):
    """Deterministic short lines of a few words each."""
    out = []
    for i in range(n):
        k = 2 + i % 5
        out.append(" ".join(WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(k)) + ".")
    return out


@pytest.fixture(scope="session")
def lines_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("vae_corpus") / "lines.txt"
    p.write_text("\n".join(toy_lines()) + "\n", encoding="utf-8")
    return p


@pytest.fixture
def tiny_vae(lines_file, tmp_path):
    """A factory of small, fast VAE training configs on the toy lines."""
    def make(**kw):
        base = dict(data=str(lines_file), hidden=12, embed=6, latent=3, batch_size=8, steps=6, eval_every=3,
                    eval_lines=20, lr=1e-2, warmup=1, out=str(tmp_path / "run"), progress=False,
                    threads=1, seed=5, device="cpu", max_len=60)
        base.update(kw)
        return VAETrainConfig(**base)
    return make


@pytest.fixture
def vae_cli_error(capsys):
    """Run the command line, demand exit code 2 and one stderr line without a traceback; return it."""
    from rnnforge.cli import main

    def run(argv) -> str:
        capsys.readouterr()
        code = main([str(a) for a in argv])
        err = capsys.readouterr().err.strip()
        assert code == 2, (code, err)
        assert len(err.splitlines()) == 1 and "Traceback" not in err, err
        return err
    return run
