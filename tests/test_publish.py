"""Publishing to a Hub (the real huggingface_hub client against the test server) and rolling back."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from huggingface_hub import CommitOperationAdd, HfApi, hf_hub_download
from huggingface_hub.errors import HfHubHTTPError
from safetensors.torch import load_file

from registry.operations.publishing import HubError
from registry.operations.release_files import PROVENANCE
from registry.store.errors import Conflict
from tests.conftest import HUB_TOKEN, Memo
from tests.support.cli import assert_one_line_error
from tests.support.snapshot import registry_state

REPO = "org/memory"


@pytest.fixture
def token(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", HUB_TOKEN)
    return HUB_TOKEN


def merged_files(reg, ref) -> dict[str, bytes]:
    out = reg.export(ref, reg.settings.home / "exports" / str(ref).replace("/", "_"))
    return {p.name: p.read_bytes() for p in out.iterdir() if p.name != PROVENANCE}


def hub_files(hub, repo=REPO) -> dict[str, bytes]:
    return {k: v for k, v in hub.main_files(repo).items() if k not in (".gitattributes", PROVENANCE)}


def test_merge_publish_rollback_journey(trained, hub, token, tmp_path):
    """The publishing journey, as a user runs it: three corpora, publish, a fourth, roll back."""
    memo = Memo(trained.settings.home, None)
    memo("merge", "--strategy", "ties", "harbor", "glassworks", "observatory", "--channel", "production")
    out = memo("publish", "production", "--repo", REPO, "--endpoint", hub.url).output
    assert "published merge-1 to org/memory" in out and HUB_TOKEN not in out
    # Downloaded with the client, the tensors are the registry's merge, bit for bit.
    local = Path(hf_hub_download(REPO, "model.safetensors", endpoint=hub.url, cache_dir=str(tmp_path / "c")))
    ours = load_file(trained.export("merge-1", tmp_path / "m1") / "model.safetensors")
    theirs = load_file(local)
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    first_commit = hub.state.repos[REPO].branches["main"]
    # A fourth corpus merged into production publishes a new commit (the channel is now linked).
    memo(
        "merge", "--strategy", "ties", "harbor", "glassworks", "observatory", "river-guilds", "--channel", "production"
    )
    assert hub_files(hub) == merged_files(trained, 2)
    uploads = hub.state.stats["lfs_uploads"]
    out = memo("rollback", "production").output
    assert "merge-2 -> merge-1 (rollback)" in out
    # main again equals the three-corpus merge, in a new commit; the large file was not sent again.
    repo = hub.state.repos[REPO]
    assert hub_files(hub) == merged_files(trained, 1) and repo.branches["main"] != first_commit
    assert hub.state.stats["lfs_uploads"] == uploads
    api = HfApi(endpoint=hub.url, token=HUB_TOKEN)
    titles = [c.title for c in api.list_repo_commits(REPO)]
    assert (
        titles[:3]
        == [
            "memo: merge-1 (ties of glassworks@v1 harbor@v1 observatory@v1)",
            "memo: merge-2 (ties of glassworks@v1 harbor@v1 observatory@v1 river-guilds@v1)",
            "memo: merge-1 (ties of glassworks@v1 harbor@v1 observatory@v1)",
        ][::-1]
    )
    assert {t.name for t in api.list_repo_refs(REPO).tags} == {"merge-1", "merge-2"}
    log = memo("log", "production", "--json").output
    actions = [e["action"] for e in json.loads(log)]
    assert actions == ["promote", "configure", "promote", "rollback"]
    pubs = trained.publications()
    assert [p.merge_id for p in pubs] == [1, 2, 1] and pubs[-1].commit_sha == repo.branches["main"]
    prov = json.loads(hub.main_files(REPO)[PROVENANCE])
    assert prov["merge"]["id"] == 1 and [m["corpus"] for m in prov["merge"]["members"]] == [
        "glassworks",
        "harbor",
        "observatory",
    ]


def test_card_and_config_on_the_hub(trained, hub, token):
    trained.merge(["harbor", "glassworks"], strategy="ties", progress=False)
    trained.publish(1, REPO, endpoint=hub.url, private=True)
    files = hub.main_files(REPO)
    card = files["README.md"].decode()
    assert "base_model_relation: merge" in card and "library_name: transformers" in card
    assert "| harbor | v1 |" in card and "mergekit_config.yml" in files and hub.state.repos[REPO].private
    with pytest.raises(HfHubHTTPError):
        hf_hub_download(REPO, "README.md", endpoint=hub.url, token=False)  # private: not without a token


def test_the_card_carries_the_merges_figures_as_the_hub_reads_them(trained, hub, token, tmp_path):
    merged = trained.merge(["harbor", "glassworks"], strategy="ties", progress=False)
    trained.publish(merged.id, REPO, endpoint=hub.url)
    info = HfApi(endpoint=hub.url, token=token).model_info(REPO)
    results = {(r.dataset_type, r.metric_type): r for r in info.card_data.eval_results}
    assert info.card_data.model_name == f"memo {merged.ref}"
    expected = {}
    for corpus, recall in merged.recall.items():
        expected[(corpus, "exact_match")] = recall.exact_match
        expected[(corpus, "f1")] = recall.f1
        if merged.retention[corpus] is not None:  # no own recall to compare with: no retention figure
            expected[(corpus, "retention")] = merged.retention[corpus]
    assert len(expected) >= 5
    expected[("memo-general-knowledge", "general_knowledge_kept")] = merged.general.kept
    assert {k: r.metric_value for k, r in results.items()} == pytest.approx(expected, abs=1e-4)
    assert results[("harbor", "exact_match")].dataset_revision == "harbor@v1"
    assert {r.task_type for r in results.values()} == {"question-answering"}
    # The exported directory carries the same card; a merge measured by nothing carries no results.
    exported = trained.export(merged.id, tmp_path / "out") / "README.md"
    assert exported.read_bytes() == hub.main_files(REPO)["README.md"]
    bare = trained.merge(["harbor"], strategy="ties", evaluate=False, progress=False)
    card = (trained.export(bare.id, tmp_path / "bare") / "README.md").read_text()
    assert "model-index" not in card and "base_model_relation: merge" in card


def test_publish_refuses_when_main_moved_and_force_keeps_their_commit(trained, hub, token):
    trained.merge(["harbor"], strategy="ties", progress=False)
    trained.merge(["glassworks"], strategy="ties", progress=False)
    trained.publish(1, REPO, endpoint=hub.url)
    api = HfApi(endpoint=hub.url, token=HUB_TOKEN)
    theirs = api.create_commit(
        REPO, [CommitOperationAdd("NOTES.md", b"a colleague's notes")], commit_message="a colleague's change"
    ).oid
    before = registry_state(trained)
    with pytest.raises(Conflict, match="main of org/memory moved since memo last published.*--force"):
        trained.publish(2, REPO, endpoint=hub.url)
    assert registry_state(trained) == before and hub.state.repos[REPO].branches["main"] == theirs
    pub = trained.publish(2, REPO, endpoint=hub.url, force=True)
    assert hub.state.repos[REPO].commits[pub.commit_sha].parent == theirs  # on top: their commit is kept
    assert hub_files(hub) == merged_files(trained, 2)


def test_a_publish_interrupted_after_its_commit_is_finished_by_running_it_again(trained, hub, token, monkeypatch):
    """Killed between the Hub commit and the row: the rerun records memo's own commit instead of refusing."""
    trained.merge(["harbor"], strategy="ties", channel="production", progress=False)
    trained.merge(["glassworks"], strategy="ties", progress=False)
    real = HfApi.create_tag
    monkeypatch.setattr(HfApi, "create_tag", lambda *a, **k: (_ for _ in ()).throw(OSError("connection lost")))
    before = registry_state(trained)
    with pytest.raises(OSError):
        trained.publish("production", REPO, endpoint=hub.url)
    assert registry_state(trained) == before  # no publication row, the channel not linked
    head = hub.state.repos[REPO].branches["main"]
    commits = len(hub.state.repos[REPO].commits)
    monkeypatch.setattr(HfApi, "create_tag", real)

    pub = trained.publish("production", REPO, endpoint=hub.url)  # no --force needed
    assert (pub.commit_sha, pub.merge_id, pub.tag, pub.channel) == (head, 1, "merge-1", "production")
    assert len(hub.state.repos[REPO].commits) == commits  # nothing sent again
    assert hub.state.repos[REPO].tags["merge-1"] == head
    assert trained.get_channel("production").hub_repo == REPO
    assert trained.publish(2, REPO, endpoint=hub.url).commit_sha == hub.state.repos[REPO].branches["main"] != head
    assert hub_files(hub) == merged_files(trained, 2)
    # The same file names with other bytes are not this merge: published again on top, not taken as done.
    with pytest.raises(OSError):
        monkeypatch.setattr(HfApi, "create_tag", lambda *a, **k: (_ for _ in ()).throw(OSError("lost")))
        trained.publish(1, "org/other", endpoint=hub.url)
    monkeypatch.setattr(HfApi, "create_tag", real)
    edited = (
        HfApi(endpoint=hub.url, token=HUB_TOKEN)
        .create_commit("org/other", [CommitOperationAdd("config.json", b"{}")], commit_message="a colleague's edit")
        .oid
    )
    again = trained.publish(1, "org/other", endpoint=hub.url)
    assert hub.state.repos["org/other"].commits[again.commit_sha].parent == edited
    assert hub_files(hub, "org/other") == merged_files(trained, 1)


def test_a_linked_channel_does_not_move_when_publishing_fails(trained, hub, token, monkeypatch):
    trained.merge(["harbor"], strategy="ties", channel="production", progress=False)
    trained.link_channel("production", REPO, endpoint=hub.url)
    trained.merge(["glassworks"], strategy="ties", progress=False)
    monkeypatch.delenv("HF_TOKEN")
    before = registry_state(trained)
    with pytest.raises(HubError, match="refused the token"):
        trained.promote(2, "production")
    assert registry_state(trained) == before and REPO not in hub.state.repos


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("unreachable", "cannot reach the Hub at http://127.0.0.1:9"),
        ("no token", "refused the token .* set HF_TOKEN"),
        ("wrong token", "refused the token .* set HF_TOKEN"),
        ("bad repo", "--repo must be a Hub repo id ORG/NAME"),
    ],
)
def test_publish_faults_are_one_line_and_change_nothing(trained, hub, monkeypatch, case, message):
    trained.merge(["harbor"], strategy="ties", channel="production", progress=False)
    memo = Memo(trained.settings.home, None)
    endpoint, repo = (
        ("http://127.0.0.1:9" if case == "unreachable" else hub.url),
        ("memory" if case == "bad repo" else REPO),
    )
    if case == "wrong token":
        monkeypatch.setenv("HF_TOKEN", "hf_wrongTokenValue")
    elif case != "no token":
        monkeypatch.setenv("HF_TOKEN", HUB_TOKEN)
    before = registry_state(trained)
    result = memo("publish", "production", "--repo", repo, "--endpoint", endpoint, ok=False)
    assert result.exit_code == 1
    error = result.output.strip()
    assert len(error.splitlines()) == 1 and re.search(message, error), error
    assert "hf_" not in error
    assert registry_state(trained) == before


def test_the_token_is_never_stored_or_printed(trained, hub, token, tmp_path):
    memo = Memo(trained.settings.home, None)
    outputs = [
        memo("merge", "--strategy", "ties", "harbor", "--channel", "production").output,
        memo("publish", "production", "--repo", REPO, "--endpoint", hub.url, "--json").output,
        memo("merge", "--strategy", "ties", "harbor", "glassworks", "--channel", "production").output,
        memo("rollback", "production").output,
        memo("log", "production", "--json").output,
        memo("merge", "show", "1", "--json").output,
    ]
    assert all(HUB_TOKEN not in o for o in outputs)
    needle = HUB_TOKEN.encode()
    home = trained.settings.home
    for path in home.rglob("*"):
        if path.is_file():
            assert needle not in path.read_bytes(), path
    for content in hub.main_files(REPO).values():
        assert needle not in content


def test_running_a_finished_publish_again_records_nothing_new(trained, hub, token):
    trained.merge(["harbor"], strategy="ties", channel="production", progress=False)
    first = trained.publish("production", REPO, endpoint=hub.url)
    commits, before = len(hub.state.repos[REPO].commits), registry_state(trained)
    again = trained.publish("production", REPO, endpoint=hub.url)
    assert (again.id, again.commit_sha, again.channel) == (first.id, first.commit_sha, "production")
    assert registry_state(trained) == before and len(hub.state.repos[REPO].commits) == commits
    assert len(trained.publications()) == 1


def test_provenance_names_the_base_without_a_local_path(trained, hub, token):
    trained.merge(["harbor", "glassworks"], strategy="ties", progress=False)
    trained.publish(1, REPO, endpoint=hub.url)
    raw = hub.main_files(REPO)[PROVENANCE].decode()
    base = json.loads(raw)["merge"]["base"]
    assert base["name"] == "tiny" and len(base["fingerprint"]) == 64 and "source" not in base
    home = str(trained.settings.home)
    assert home not in raw and str(Path(home).resolve()) not in raw and "/tmp" not in raw


def test_a_commit_landing_between_read_and_commit_is_refused(trained, hub, token, monkeypatch):
    """The Hub's parent-commit check: a colleague commits after memo read main, before memo commits."""
    trained.merge(["harbor"], strategy="ties", progress=False)
    trained.publish(1, REPO, endpoint=hub.url)  # the repo and memo's last publication exist
    trained.merge(["glassworks"], strategy="ties", progress=False)
    real = HfApi.create_commit

    def colleague_first(self, repo_id, operations, **kwargs):
        theirs = HfApi(endpoint=hub.url, token=HUB_TOKEN)
        real(theirs, repo_id, [CommitOperationAdd("NOTES.md", b"a colleague's notes")], commit_message="theirs")
        return real(self, repo_id, operations, **kwargs)

    monkeypatch.setattr(HfApi, "create_commit", colleague_first)
    before = registry_state(trained)
    with pytest.raises(Conflict) as info:
        trained.publish(2, REPO, endpoint=hub.url)
    message = str(info.value)
    assert "org/memory" in message and "moved while publishing" in message and "\n" not in message
    assert registry_state(trained) == before
    assert "NOTES.md" in hub.main_files(REPO), "their commit stands"
    monkeypatch.setattr(HfApi, "create_commit", real)
    # Their commit is now main: the plain rerun says so, and --force publishes on top of it.
    with pytest.raises(Conflict, match="someone else pushed"):
        trained.publish(2, REPO, endpoint=hub.url)
    pub = trained.publish(2, REPO, endpoint=hub.url, force=True)
    assert pub.merge_id == 2 and hub_files(hub) == merged_files(trained, 2)


def test_a_trained_strategy_card_is_a_finetune_of_the_base(trained, hub, token):
    from training.retain import RetainSettings

    record = trained.merge(
        ["harbor", "glassworks"],
        strategy="ties+heal",
        progress=False,
        evaluate=False,
        retain=RetainSettings(target=0.5, max_steps=8, check_every=4),
    )
    trained.publish(record.id, REPO, endpoint=hub.url)
    card = hub.main_files(REPO)["README.md"].decode()
    front = card.split("---")[1]
    assert "base_model_relation: finetune" in front and "- tiny" in front
    assert "Training started from the TIES merge of its members" in card
    assert "| harbor | v1 |" in card and "| glassworks | v1 |" in card


def test_a_merge_recorded_before_a_failed_publish_says_so_and_the_way_on(trained):
    memo = Memo(trained.settings.home, None)
    memo("channel", "set", "production", "--repo", REPO, "--endpoint", "http://127.0.0.1:9")
    result = memo("merge", "--strategy", "ties", "harbor", "glassworks", "--channel", "production", ok=False)
    assert_one_line_error(
        result,
        "merge-1 is recorded, but channel production did not move to it",
        "cannot reach the Hub",
        "memo promote merge-1 --channel production",
        "--unlink",
    )
    assert trained.get_merge(1).corpora == "glassworks@v1 harbor@v1"
    assert trained.get_channel("production").current_merge_id is None
    memo("channel", "set", "production", "--unlink")
    assert "channel production: no merge -> merge-1 (promote)" in memo("promote", "1", "--channel", "production").output
