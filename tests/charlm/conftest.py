import pytest

from rnnforge.charlm.train import TrainConfig

TEXT = ("the quick brown fox jumps over the lazy dog. " * 40
        + "pack my box with five dozen liquor jugs! " * 40)


@pytest.fixture(scope="session")
def text_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("corpus") / "c.txt"
    p.write_text(TEXT, encoding="utf-8")
    return p


@pytest.fixture
def corpus(tmp_path):
    p = tmp_path / "corpus.txt"
    p.write_text(TEXT, encoding="utf-8")
    return p


@pytest.fixture
def tiny(corpus, tmp_path):
    """A factory of small, fast training configs on the toy corpus."""
    def make(**kw):
        base = dict(data=str(corpus), hidden=24, layers=1, batch_size=4, seq_len=16, steps=12,
                    eval_every=6, lr=1e-2, warmup=2, out=str(tmp_path / "run"), progress=False,
                    tensorboard=False, threads=1, seed=3, device="cpu")  # GPU runs: the CUDA tests
        base.update(kw)
        return TrainConfig(**base)
    return make



@pytest.fixture
def cli_error(capsys):
    """Run the command line, demand exit code 2 and one stderr line without a traceback; return it."""
    from rnnforge.cli import main

    def run(argv) -> str:
        capsys.readouterr()  # drop what earlier calls printed
        code = main([str(a) for a in argv])
        err = capsys.readouterr().err.strip()
        assert code == 2, (code, err)
        assert len(err.splitlines()) == 1 and "Traceback" not in err, err
        return err
    return run


@pytest.fixture(scope="session")
def tiny_argv():
    """``rnnforge train`` of a tiny model on ``data`` into ``out`` (later flags override these)."""
    def argv(data, out, *extra) -> list[str]:
        return ["train", "--data", str(data), "--hidden", "8", "--layers", "1", "--steps", "4",
                "--eval-every", "2", "--seq-len", "8", "--batch-size", "2", "--out", str(out),
                "--no-progress", "--no-tensorboard", "--device", "cpu", "--threads", "1", *map(str, extra)]
    return argv
