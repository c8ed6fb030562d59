"""The saved result of ``hub audit verify``: what the metrics process reads for ``hub_audit_chain_ok``."""

from __future__ import annotations

from pathlib import Path

from hub.audit.chain import Anchor, Break, VerifyResult
from hub.audit.verify import AuditVerification, PartitionReport, latest_verification, result_path, save_verification
from hub.contract import AUDIT_TOPIC
from hub.settings import Settings


def verification(ok: bool) -> AuditVerification:
    broken = VerifyResult(ok=False, count=18, first_break=Break(17, "removed", "seq 17 missing"), first_seq=0,
                          head_seq=16, head_hash="b" * 64, head_offset=16, checkpoints=1)
    fine = VerifyResult(ok=True, count=40, first_seq=0, head_seq=39, head_hash="a" * 64, head_offset=39, checkpoints=4)
    return AuditVerification(
        topic=AUDIT_TOPIC, ok=ok, verified_at_ms=1_767_225_600_000, duration_s=1.25, keyed=False,
        partitions=[PartitionReport(0, 0, 40, fine), PartitionReport(1, 0, 44, fine if ok else broken)],
        anchors={0: Anchor(39, "a" * 64)},
    )


def test_nothing_saved_yet_means_no_verification(tmp_path: Path) -> None:
    assert latest_verification(Settings(state_dir=tmp_path)) is None


def test_a_saved_verification_reads_back_whole(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path)
    for ok in (True, False):
        saved = verification(ok)
        path = save_verification(settings, saved)
        assert path == result_path(settings) and path.parent == tmp_path / "audit"
        again = latest_verification(settings)
        assert again == saved
        assert again.to_json() == saved.to_json()
    assert again.first_break == (1, Break(17, "removed", "seq 17 missing"))
    assert again.to_json()["first_break"] == {"partition": 1, "offset": 17, "kind": "removed",
                                              "message": "seq 17 missing"}
    assert [p.name for p in (tmp_path / "audit").iterdir()] == ["verify-hub.audit.json"]  # no temp files left


def test_an_unreadable_result_file_is_no_verification(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path)
    result_path(settings).parent.mkdir(parents=True)
    result_path(settings).write_text("{not json")
    assert latest_verification(settings) is None
