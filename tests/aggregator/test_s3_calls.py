"""The S3 calls the aggregator makes, recorded against moto and saved for the Terraform module's IAM policy."""

from __future__ import annotations

import json

from tests.aggregator.s3_calls import IAM_ACTIONS, record_aggregator_calls, recorded_s3_operations, write_artifact


def test_recorded_s3_operations_are_the_expected_few_and_saved():
    operations = recorded_s3_operations()
    # Every one of these is needed: listing, reading inputs/manifests, conditional writes, quarantine moves, tidy-up.
    assert operations == {"CopyObject", "DeleteObject", "GetObject", "HeadObject", "ListObjectsV2", "PutObject"}
    assert operations <= set(IAM_ACTIONS)
    record = record_aggregator_calls()
    areas = record["key_areas_by_operation"]
    assert set(areas["PutObject"]) <= {"merged/", "quarantine/"}, "the aggregator must never write raw/"
    assert set(areas["DeleteObject"]) <= {"raw/", "merged/"}
    assert record["iam_actions"] == ["s3:DeleteObject", "s3:GetObject", "s3:ListBucket", "s3:PutObject"]
    path = write_artifact()
    assert json.loads(path.read_text())["s3_operations"] == sorted(operations)
