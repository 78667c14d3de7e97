"""What a failed upload or registration leaves in S3 is named, with the command that removes it; with
on_error="cleanup-all" amidsl removes it itself."""

from __future__ import annotations

PLACE = "s3://amidsl-example-bundles/images/example"


def keys_in_bucket(region) -> list[str]:
    listed = region.s3.list_objects_v2(Bucket="amidsl-example-bundles", Prefix="images/example/")
    return sorted(item["Key"] for item in listed.get("Contents", []))


def test_a_failed_upload_names_the_parts_it_left_and_how_to_remove_them(run, example_settings, region):
    region.faults.fail_object = "image.manifest.xml"  # the part goes up, the manifest never does
    simulation = run(example_settings)
    message = str(simulation.error)
    assert simulation.error.phase == "ami-upload"
    assert keys_in_bucket(region) == ["images/example/image.part.0"]
    assert f"left in S3: {PLACE}/image.part.0" in message
    command = "amidsl delete-bundle -b amidsl-example-bundles/images/example -p image --partial"
    assert f"Remove them with: {command} --region us-east-1" in message
    assert "--on-error cleanup-all" in message


def test_a_rejected_registration_names_the_whole_bundle(run, example_settings, region):
    region.faults.reject_register = "InvalidManifest"
    simulation = run(example_settings)
    message = str(simulation.error)
    assert f"{PLACE}/image.manifest.xml" in message and f"{PLACE}/image.part.0" in message


def test_cleanup_all_removes_what_a_failed_registration_left(run, example_settings, region):
    region.faults.reject_register = "InvalidManifest"
    simulation = run(example_settings, on_error="cleanup-all")
    message = str(simulation.error)
    assert keys_in_bucket(region) == []
    assert f"The bundle was removed from S3 (2 object(s) under {PLACE}/)" in message
    assert "credentials were removed" in message
    assert "the phases from ami-upload on" in message  # the bundle must go up again


def test_a_failure_before_the_upload_says_nothing_about_s3(run, example_settings, node):
    node.faults.disk_full_under = "/tmp"
    simulation = run(example_settings)
    assert "S3" not in str(simulation.error)
