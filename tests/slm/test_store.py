"""The store behaves the same on a local directory and on a real S3 server (SeaweedFS on 127.0.0.1)."""

import os

import pytest

from slm.errors import UserError
from slm.store import LocalStore, S3Store, Store


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return Store.open(str(tmp_path / "store"))
    return Store.open(request.getfixturevalue("s3_env"))


def make_tree(root, files):
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_open_picks_backend(tmp_path, s3_env):
    assert isinstance(Store.open(str(tmp_path)), LocalStore)
    assert isinstance(Store.open(s3_env), S3Store)
    with pytest.raises(UserError, match="only local directories and s3://"):
        Store.open("gs://bucket/x")


def test_json_roundtrip_and_listing(store):
    store.write_json("runs/a/record.json", {"x": 1})
    store.write_text("runs/a/notes.txt", "hello")
    store.write_text("runs/b/notes.txt", "hi")
    assert store.read_json("runs/a/record.json") == {"x": 1}
    assert store.list("runs/a") == ["runs/a/notes.txt", "runs/a/record.json"]
    assert store.children("runs") == ["a", "b"]
    assert store.exists("runs/a") and store.exists("runs/a/notes.txt") and not store.exists("runs/c")
    with pytest.raises(UserError, match="not found in store"):
        store.read_bytes("runs/missing.json")
    store.delete_prefix("runs/a")
    assert store.list("runs/a") == []


def test_tree_roundtrip_verifies_checksums(store, tmp_path):
    src = make_tree(tmp_path / "src", {"config.json": "{}", "model.safetensors": "weights", "sub/x.txt": "x"})
    manifest = store.put_tree(src, "models/m", meta={"step": 3})
    assert set(manifest["files"]) == {"config.json", "model.safetensors", "sub/x.txt"}
    assert store.is_complete("models/m") and store.tree_manifest("models/m")["step"] == 3
    out = tmp_path / "out"
    store.get_tree("models/m", out, include=lambda rel: "/" not in rel)
    assert (out / "model.safetensors").read_text() == "weights" and not (out / "sub").exists()

    store.write_text("models/m/model.safetensors", "tampered")
    with pytest.raises(UserError, match="checksum mismatch"):
        store.get_tree("models/m", tmp_path / "out2")


def test_incomplete_tree_is_never_read(store, tmp_path):
    """Files without the completion marker (an interrupted upload) are invisible to readers."""
    store.write_text("ckpt/checkpoint-5/model.safetensors", "half")
    assert not store.is_complete("ckpt/checkpoint-5")
    with pytest.raises(UserError, match="incomplete"):
        store.get_tree("ckpt/checkpoint-5", tmp_path / "x")


def test_s3_reads_endpoint_and_credentials_from_environment(s3_env, monkeypatch):
    store = Store.open(s3_env)
    store.write_text("k.txt", "v")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    with pytest.raises(Exception, match="SignatureDoesNotMatch|AccessDenied|InvalidAccessKeyId|403"):
        Store.open(s3_env).read_bytes("k.txt")


def test_s3_server_restarted_mid_checkpoint_upload_never_yields_a_partial_checkpoint(
    s3_server, s3_env, tmp_path, monkeypatch
):
    """The engine's own upload callback writes checkpoint-20 while the S3 server goes down after a few
    files and comes back: resume and the sweep still only see checkpoint-10 (whose optimizer state is
    kept: it is the newest complete one); re-saving completes checkpoint-20, and only then is
    checkpoint-10's optimizer state pruned, with its weights and a marker that says so."""
    from types import SimpleNamespace

    from slm.callbacks import StoreCheckpointCallback
    from slm.checkpoints import resumable
    from slm.layout import latest_checkpoint as latest_complete_checkpoint
    from slm.orchestration.training import checkpoints
    from slm.store import S3Store

    prefix = "runs/pretrain/pretrain-0123456789"
    out = tmp_path / "trainer"
    for step in (10, 20):
        local = out / f"checkpoint-{step}"
        (local / f"global_step{step}").mkdir(parents=True)
        (local / "config.json").write_text("{}")
        for i in range(6):
            (local / f"global_step{step}" / f"shard_{i}.pt").write_bytes(os.urandom(256 * 1024))
    (out / "checkpoint-10" / "model.safetensors").write_bytes(b"weights")
    work = tmp_path / "work"
    (work / "tensorboard").mkdir(parents=True)
    (work / "train_log.csv").write_text("step,loss\n10,1.0\n")
    (work / "tensorboard" / "events.out.tfevents.1").write_bytes(b"event")
    callback = StoreCheckpointCallback(Store.open(s3_env), prefix, local_rank=0, work=work, keep_resume_states=1)
    args = SimpleNamespace(output_dir=str(out))

    def state(step):
        return SimpleNamespace(global_step=step, is_world_process_zero=True, log_history=[{"loss": 1.0}])

    callback.on_step_end(args, state(10), None)
    callback.on_save(args, state(10), None)
    callback.wait()  # the upload runs in the background; the end of training (or the next save) waits
    marker = Store.open(s3_env).tree_manifest(f"{prefix}/checkpoints/checkpoint-10")
    assert marker["save_s"] >= 0 and marker["upload_s"] >= 0
    # the logs so far went up with the checkpoint (live curves; a lost box keeps them)
    assert Store.open(s3_env).read_text(f"{prefix}/train/train_log.csv") == "step,loss\n10,1.0\n"
    assert Store.open(s3_env).exists(f"{prefix}/train/tensorboard/events.out.tfevents.1")

    real_upload, calls = S3Store.upload_file, []

    def upload_then_lose_the_server(self, local, key, progress=None):
        calls.append(key)
        if len(calls) == 3:
            s3_server.stop()
        return real_upload(self, local, key, progress)

    monkeypatch.setattr(S3Store, "upload_file", upload_then_lose_the_server)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
    try:
        callback.on_save(args, state(20), None)  # returns at once: training goes on
        with pytest.raises(RuntimeError, match=r"checkpoint upload to s3://.*checkpoint-20 failed"):
            callback.wait()  # the failure fails the run at the next step, save or the end of training
        with pytest.raises(RuntimeError, match="failed"):
            callback.on_step_end(args, state(21), None)
    finally:
        s3_server.start()
    monkeypatch.setattr(S3Store, "upload_file", real_upload)

    store = Store.open(s3_env)
    assert store.exists(f"{prefix}/checkpoints/checkpoint-20/config.json"), "part of checkpoint-20 did land"
    assert not store.is_complete(f"{prefix}/checkpoints/checkpoint-20")
    assert latest_complete_checkpoint(store, prefix).endswith("checkpoint-10")
    assert [c.name for c in checkpoints(store, prefix)] == ["checkpoint-10"]
    assert resumable(store, f"{prefix}/checkpoints/checkpoint-10"), "pruned before a newer one was complete"

    callback = StoreCheckpointCallback(Store.open(s3_env), prefix, local_rank=0, work=work, keep_resume_states=1)
    callback.on_save(args, state(20), None)  # what the restarted worker group does after resuming
    callback.on_train_end(args, state(20), None)
    assert not store.list(f"{prefix}/checkpoints/_uploads"), "the nodes' upload records are cleared"
    assert latest_complete_checkpoint(store, prefix).endswith("checkpoint-20")
    assert [c.name for c in checkpoints(store, prefix)] == ["checkpoint-10", "checkpoint-20"]
    ten = f"{prefix}/checkpoints/checkpoint-10"
    assert resumable(store, f"{prefix}/checkpoints/checkpoint-20") and not resumable(store, ten)
    assert not store.list(f"{ten}/global_step10"), "the optimizer shards are gone from the store"
    assert store.tree_manifest(ten)["pruned"]["bytes"] == 6 * 256 * 1024
    assert store.read_bytes(f"{ten}/model.safetensors") == b"weights"
    store.get_tree(ten, tmp_path / "fetched")  # still a complete, verifiable tree (what the sweep reads)


def test_training_goes_on_while_a_checkpoint_uploads_and_the_next_save_waits_for_it(tmp_path, monkeypatch):
    """Background upload: on_save returns while the upload is still running, no marker exists until it
    has finished, the next save waits for it (one in flight), and `background: false` uploads before
    returning, as before."""
    import threading
    from types import SimpleNamespace

    from slm.callbacks import UPLOAD_NICE, StoreCheckpointCallback
    from slm.store import LocalStore, Store

    out, work = tmp_path / "trainer", tmp_path / "work"
    for step in (10, 20):
        (out / f"checkpoint-{step}").mkdir(parents=True)
        (out / f"checkpoint-{step}" / "model.safetensors").write_bytes(b"w" * 1000)
    work.mkdir()
    store = Store.open(str(tmp_path / "store"))
    prefix = "runs/pretrain/pretrain-0123456789"
    gate, real = threading.Event(), LocalStore.upload_file
    nice_of_upload = []

    def held_upload(self, local, key, progress=None):
        nice_of_upload.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        assert gate.wait(30), "the test never released the upload"
        return real(self, local, key, progress)

    monkeypatch.setattr(LocalStore, "upload_file", held_upload)
    args = SimpleNamespace(output_dir=str(out))

    def state(step):
        return SimpleNamespace(global_step=step, is_world_process_zero=True, log_history=[{"loss": 1.0}])

    callback = StoreCheckpointCallback(store, prefix, local_rank=0, work=work)
    callback.on_save(args, state(10), None)  # returns with the upload held
    callback.on_step_end(args, state(11), None)  # training goes on
    assert callback.thread.is_alive() and not store.is_complete(f"{prefix}/checkpoints/checkpoint-10")
    threading.Timer(0.5, gate.set).start()
    callback.on_save(args, state(20), None)  # waits for checkpoint-10 first
    marker = store.tree_manifest(f"{prefix}/checkpoints/checkpoint-10")
    assert marker["background"] and marker["waited_s"] == 0
    callback.on_train_end(args, state(20), None)
    assert store.tree_manifest(f"{prefix}/checkpoints/checkpoint-20")["waited_s"] >= 0.3
    # the upload thread yields to training where both want a core (Linux: nice per thread); training's is untouched
    training_nice = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    assert nice_of_upload and min(nice_of_upload) >= max(training_nice, UPLOAD_NICE)

    monkeypatch.setattr(LocalStore, "upload_file", real)
    plain = StoreCheckpointCallback(
        store, "runs/pretrain/pretrain-9876543210", local_rank=0, work=work, background=False
    )
    plain.on_save(args, state(10), None)
    assert plain.thread is None and store.is_complete("runs/pretrain/pretrain-9876543210/checkpoints/checkpoint-10")


def test_a_store_that_is_a_file_is_named_not_read_as_empty(tmp_path):
    import pytest

    from slm.errors import UserError
    from slm.store import Store

    file = tmp_path / "store.txt"
    file.write_text("not a store")
    with pytest.raises(UserError, match=r"store '.*store.txt' is a file .*, not a directory"):
        Store.open(str(file))


def test_s3_without_credentials_server_or_bucket_is_one_line_naming_the_store(s3_server, monkeypatch):
    from slm.errors import UserError

    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    with pytest.raises(UserError, match=r"store s3://no-such-bucket-x/p: bucket 'no-such-bucket-x' does not exist"):
        Store.open("s3://no-such-bucket-x/p")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://user:hunter2@127.0.0.1:9")  # nothing listens on port 9
    with pytest.raises(UserError, match=r"cannot reach the S3 endpoint http://<redacted>@127.0.0.1:9") as unreachable:
        Store.open("s3://b1/p")
    assert "hunter2" not in str(unreachable.value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint)
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/config")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(UserError, match=r"store s3://b2/p: no AWS credentials found"):
        Store.open("s3://b2/p")


def test_tree_transfers_report_bytes_and_rate(tmp_path, capsys, monkeypatch):
    """Uploads and downloads of big trees say how much moved and how fast; small ones stay quiet."""
    from slm.store import Store, TransferProgress

    src = tmp_path / "src"
    src.mkdir()
    (src / "big.bin").write_bytes(os.urandom(3 << 20))
    (src / "small.json").write_text("{}")
    store = Store.open(str(tmp_path / "store"))
    monkeypatch.setattr(TransferProgress, "MIN_BYTES", 1 << 20)
    store.put_tree(src, "models/m")
    store.get_tree("models/m", tmp_path / "back")
    lines = capsys.readouterr().err.splitlines()
    up = [line for line in lines if line.startswith("[store] ↑")]
    down = [line for line in lines if line.startswith("[store] ↓")]
    assert len(up) == 1 and "models/m: 3.1 MB in" in up[0] and up[0].endswith("MB/s)")
    assert len(down) == 1 and "3.1 MB in" in down[0]
    monkeypatch.setattr(TransferProgress, "MIN_BYTES", 8 << 20)
    store.put_tree(src, "models/m2")
    assert "[store]" not in capsys.readouterr().err

    progress = TransferProgress("↑", "s3://b/k", 100 << 20)
    progress.PERIOD = 0.0
    progress(25 << 20)  # what boto3's transfer threads call with each chunk
    line = capsys.readouterr().err
    assert "26 / 105 MB (25%)" in line and "MB/s" in line


def test_a_full_disk_names_the_store_and_leaves_no_partial_file(tmp_path, monkeypatch):
    import errno
    import shutil as shutil_module

    from slm import store as store_module

    store = Store.open(str(tmp_path / "store"))
    store.write_text("datasets/x/manifest.json", '{"old": true}\n')
    source = tmp_path / "manifest.json"
    source.write_text('{"new": true}\n' * 1000)

    def copy_half_then_fill_the_disk(src, dst):
        with open(dst, "wb") as f:
            f.write(open(src, "rb").read()[:100])
        raise OSError(errno.ENOSPC, "No space left on device", str(dst))

    monkeypatch.setattr(store_module.shutil, "copyfile", copy_half_then_fill_the_disk)
    with pytest.raises(UserError, match=r"store .*store: no space left on its device writing datasets/x/manifest.json"):
        store.upload_file(source, "datasets/x/manifest.json")
    monkeypatch.setattr(store_module.shutil, "copyfile", shutil_module.copyfile)
    assert store.read_text("datasets/x/manifest.json") == '{"old": true}\n'  # the old file, whole
    assert [p.name for p in (tmp_path / "store/datasets/x").iterdir()] == ["manifest.json"]  # no .tmp- left


def test_a_full_scratch_disk_in_a_build_names_the_scratch_directory_and_tmpdir(tmp_path, monkeypatch):
    import errno

    import pyarrow as pa

    from slm import datasets

    def full(table, where, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(where))

    monkeypatch.setattr(datasets.pq, "write_table", full)
    store = Store.open(str(tmp_path / "store"))
    with pytest.raises(UserError, match=r"builder's scratch directory \(.*\) writing datasets/x: set TMPDIR"):
        datasets.write_sharded(
            store, "datasets/x", {"train": iter([pa.table({"a": [1]})])}, builder="sft", version="1", sources=[]
        )
    assert store.list("") == []
