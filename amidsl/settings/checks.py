"""What single settings must satisfy beyond their type: AWS's names and ids, paths, URLs, tags.

Checks take (reading, setting name, value) and record problems; the readers here read settings whose
shape is their own (an account id, tag tables, launch permissions, device mappings).
"""

from __future__ import annotations

import datetime
import difflib
import fnmatch
import functools
import importlib.util
import ipaddress
import json
import os
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from amidsl.settings.constants import AMI_TOOLS_URL, DEFAULT_RUBY_VERSION
from amidsl.settings.paths import ANY_ENTRY, BOOT_PATHS, FILLED_BOOT_DIRS, PROTECTED_DIRS
from amidsl.settings.readers import (
    comma_free,
    got,
    optional_choice,
    read_text,
    read_text_list,
    toml_spelling,
    toml_type,
)
from amidsl.settings.reading import Reading
from amidsl.settings.schema import Check, Problem, Reader, Setting, Source
from amidsl.tags import BUILT_BY_TAG

ACCESS_KEY_ID = r"(AKIA|ASIA)[A-Z0-9]{16}"
# Whom an image may be shared with (besides 12-digit account ids), in any partition.
ORGANIZATION_ARN = re.compile(r"arn:aws[a-z-]*:organizations::\d{12}:organization/o-[a-z0-9]{10,32}")
OU_ARN = re.compile(
    r"arn:aws[a-z-]*:organizations::\d{12}:ou/o-[a-z0-9]{10,32}/ou-[a-z0-9]{4,32}-[a-z0-9]{8,32}"
)


# StartSnapshot takes only a key ARN; the groups are its partition and region.
KMS_KEY_ARN = r"arn:(aws[a-z-]*):kms:([a-z0-9-]+):[0-9]{12}:key/[A-Za-z0-9-]+"
KMS_KEY_ARN_FIX = (
    "give the key's ARN, like arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab "
    "(`aws kms describe-key --key-id alias/NAME` shows it)"
)


def matches(pattern: str, message: str, fix: str) -> Check:
    """A check that a text matches `pattern`; `message` completes "<value> ..." in the problem."""

    def check(r: Reading, name: str, value: str) -> None:
        if not re.fullmatch(pattern, value):
            r.problem(name, f"{value!r} {message}", fix)

    return check


def image_name_rules(r: Reading, name: str, value: str) -> None:
    """An AMI name as EC2 takes it."""
    if not 3 <= len(value) <= 128:
        count = "1 character" if len(value) == 1 else f"{len(value)} characters"
        r.problem(
            name, f"{value!r} has {count}, and EC2 takes 3 to 128", "give an AMI name of 3 to 128 characters"
        )
    bad = sorted(set(re.sub(r"[A-Za-z0-9()\[\]./\-'@_ ]", "", value)))
    if bad:
        r.problem(
            name,
            f"{value!r} contains characters EC2 refuses ({''.join(bad)!r})",
            "use letters, digits, spaces and ( ) [ ] . / - ' @ _",
        )


def description_length(r: Reading, name: str, value: str) -> None:
    """An AMI description as EC2 takes it."""
    if len(value) > 255:
        r.problem(name, f"is {len(value)} characters long", "shorten it to at most 255 characters")


def utc_time(r: Reading, row: Setting) -> str | None:
    """A time as EC2 takes it, "YYYY-MM-DDTHH:MM:SSZ"; a TOML datetime with a time zone is the same time."""
    value = r.given.get(row.name)
    if not isinstance(value, (datetime.date, datetime.time)):
        return read_text(r, row.name)
    quoted = f'{row.name} = "2027-06-30T00:00:00Z"'
    if isinstance(value, datetime.datetime) and value.utcoffset() is not None:
        when = value.astimezone(datetime.timezone.utc)
        if not when.microsecond:
            return when.strftime("%Y-%m-%dT%H:%M:%SZ")
        r.problem(
            row.name,
            f"{toml_spelling(value)} has a fraction of a second",
            f"give whole seconds, e.g. {quoted}",
        )
        return None
    what = "datetime with no time zone" if isinstance(value, datetime.datetime) else toml_type(value)
    if isinstance(value, datetime.date):
        day = value.strftime("%Y-%m-%d")
        clock = value.strftime("%H:%M:%S") if isinstance(value, datetime.datetime) else "00:00:00"
        quoted = f'{row.name} = "{day}T{clock}Z"'
    r.problem(
        row.name,
        f"{toml_spelling(value)} is a TOML {what}, not a UTC time",
        f"write the UTC time as a quoted string: {quoted}",
    )
    return None


def deprecation_time(r: Reading, name: str, value: str) -> None:
    """A UTC time EC2's EnableImageDeprecation takes: in the future, at most 10 years on (2 if public)."""
    try:
        when = datetime.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)
    except ValueError:
        r.problem(
            name,
            f"{value!r} is not a UTC time as EC2 takes it",
            'write it as YYYY-MM-DDTHH:MM:SSZ, e.g. "2027-06-30T00:00:00Z"',
        )
        return
    now = datetime.datetime.now(datetime.timezone.utc)
    # Checked before anything runs: EC2 would refuse it only after the image is registered.
    years = 2 if r.value("public_image") else 10
    if when <= now:
        r.problem(name, f"{value!r} is in the past", "give a time in the future (EC2 refuses a past one)")
    elif when > now + datetime.timedelta(days=365 * years):
        limit = "2 years for a public image" if years == 2 else "10 years"
        r.problem(
            name, f"{value!r} is more than {limit} from now", f"give a time within {limit} (EC2's limit)"
        )


def access_key_id(r: Reading, name: str, value: str) -> None:
    """An AWS access key id; never echoed: a value here that is no key id may well be the secret key."""
    if not re.fullmatch(ACCESS_KEY_ID, value):
        swapped = " (it has the length of a secret key: are the two swapped?)" if len(value) == 40 else ""
        r.problem(
            name,
            f"a {len(value)}-character value that is not an AWS access key id{swapped}",
            "give the 20-character key id (AKIA... or ASIA...) here and the secret in secret_key",
        )


@functools.cache
def _partitions(name: str) -> tuple[dict, ...]:
    """The partitions one file of botocore's shipped partition data lists (read as JSON: boto3 itself
    stays unloaded); none when botocore or the file is missing."""
    spec = importlib.util.find_spec("botocore")
    if spec is None or not spec.submodule_search_locations:
        return ()
    try:
        text = Path(spec.submodule_search_locations[0], "data", name).read_text(encoding="utf-8")
        return tuple(json.loads(text)["partitions"])
    except (OSError, ValueError, KeyError):
        return ()


def _regions_in(name: str) -> frozenset[str]:
    """The regions one file of botocore's shipped partition data lists."""
    return frozenset(region for partition in _partitions(name) for region in partition.get("regions", {}))


def partition_of(region: str) -> str | None:
    """The partition whose ARNs name resources in `region` ("aws", "aws-cn", "aws-us-gov", ...); None
    when botocore's partition data cannot tell (it is missing, or no partition's names match)."""
    partitions = _partitions("partitions.json")
    for partition in partitions:
        if region in partition.get("regions", {}):
            return partition["id"]
    for partition in partitions:
        if re.fullmatch(partition.get("regionRegex", "$.").strip("^$"), region):
            return partition["id"]
    return None


def known_regions() -> frozenset[str]:
    """Every region in botocore's shipped partition data (empty without it: the name check alone applies)."""
    # partitions.json is the newer source; endpoints.json still lists a few regions on its own.
    return _regions_in("partitions.json") | _regions_in("endpoints.json")


def region_problem(name: str, region: str) -> Problem | None:
    """The problem with `region` (given as setting or option `name`), or None for a region AWS has."""
    if not re.fullmatch(r"[a-z]{2}(-[a-z]+)+-\d+", region):
        close = difflib.get_close_matches(region, sorted(known_regions()), n=1)
        fix = f"did you mean {close[0]!r}?" if close else "use a region code such as 'us-east-1'"
        return Problem(name, f"{region!r} is not an AWS region name", fix)
    if region in _regions_in("partitions.json"):
        return None  # the usual case, known without reading endpoints.json (1.2 MB of JSON)
    if known_regions() and region not in known_regions():
        close = difflib.get_close_matches(region, sorted(known_regions()), n=1)
        return Problem(
            name,
            f"{region!r} is not a region AWS has (per the partition data boto3 ships)",
            f"did you mean {close[0]!r}?" if close else "use a region code such as 'us-east-1'",
        )
    return None


def is_region(r: Reading, name: str, region: str) -> bool:
    """Record a problem unless `region` is a region AWS has; True when it is."""
    problem = region_problem(name, region)
    if problem is not None:
        r.problems.append(problem)
    return problem is None


def region_name(r: Reading, name: str, region: str) -> None:
    """A region AWS has."""
    is_region(r, name, region)


def architecture(r: Reading, row: Setting) -> str:
    """One of the row's choices; arm64, which manifests know, is left to the strategies' rules, which
    refuse it saying why (a second, generic problem would only repeat them)."""
    value = read_text(r, row.name, row.default) or row.default
    if value not in row.choices and value != "arm64":
        choices = ", ".join(row.choices)
        r.problem(row.name, f"{value!r} is not one of {choices}", f"use one of {choices}")
    return value


def account_id(r: Reading, row: Setting) -> str | None:
    """A 12-digit AWS account id, dashes removed (a TOML integer is accepted and zero-padded)."""
    value = r.given.get(row.name)
    if isinstance(value, int) and not isinstance(value, bool):
        value = f"{value:012d}"
    if value is None:
        return None
    if not isinstance(value, str):
        r.problem(row.name, f"must be a string, got {got(value)}", 'quote it: user_id = "..."')
        return None
    digits = value.replace("-", "").strip()
    if re.fullmatch(ACCESS_KEY_ID, digits):
        r.problem(
            row.name,
            "the value is an access key id, not an account id",
            "give your 12-digit AWS account id (put the key id in access_key)",
        )
    elif not re.fullmatch(r"\d{12}", digits):
        r.problem(
            row.name,
            f"{value!r} is not a 12-digit AWS account id",
            "give your 12-digit account id, e.g. '1234-5678-9012' or '123456789012'",
        )
    return digits


def leaves_a_bootable_image(r: Reading, name: str, patterns: tuple[str, ...]) -> None:
    """No exclude pattern takes the whole image, or what every image needs to boot."""
    needs = [
        *((path, repr(path)) for path in BOOT_PATHS),
        *((f"{d}/{ANY_ENTRY}", f"everything in {d!r}") for d in FILLED_BOOT_DIRS),
    ]
    for pattern in patterns:
        needed = next((what for path, what in needs if fnmatch.fnmatchcase(path, pattern)), None)
        if needed == "'/'":
            # The node program never tests the root itself, only every entry below it; `find` tests
            # its starting point first, prints '/' alone and looks no further, and ec2-bundle-vol's
            # rsync takes `--exclude /` to match nothing.
            r.problem(
                name,
                f"entry {pattern!r} matches the image's root '/' itself: a native build would leave out "
                "every path (an empty image), and ami-tools would give ec2-bundle-vol '/' alone, which "
                "leaves out nothing, not even what image hygiene leaves out",
                "remove it, or name what to leave out below a directory, e.g. '/srv/cache/*' or "
                "'*/.env' (`*` also crosses '/')",
            )
        elif needed is not None:
            r.problem(
                name,
                f"entry {pattern!r} matches {needed}, which every image needs to boot",
                "remove it, or narrow it to what to leave out (`*` also crosses '/', so '/usr/*' is all "
                "of /usr), e.g. '/usr/share/doc/*'",
            )


def keeps_below_the_root(r: Reading, name: str, patterns: tuple[str, ...]) -> None:
    """No include matches the image's root, which the two bundlers would take differently."""
    for pattern in patterns:
        if fnmatch.fnmatchcase("/", pattern):
            # The node program would keep every path the filter tests; `find` prints '/' alone, and
            # ec2-bundle-vol's `-i /` brings back no path (as `-e /` leaves out none).
            r.problem(
                name,
                f"entry {pattern!r} matches the image's root '/' itself: a native build would keep "
                "every path the filter leaves out, and ami-tools would give ec2-bundle-vol '/' alone, "
                "which keeps nothing",
                "remove it, or name what the filter must keep, e.g. '/etc/app/*.pem' or '*.gpg'",
            )


def ruby_version(r: Reading, name: str, value: str) -> None:
    """A Ruby version rbenv can build."""
    if not re.fullmatch(r"\d+\.\d+(\.\d+)?(-[a-z0-9]+)?", value):
        r.problem(name, f"{value!r} is not a Ruby version", f"use a version such as {DEFAULT_RUBY_VERSION!r}")


def http_url(r: Reading, name: str, url: str) -> None:
    """An http(s) URL that curl takes as a URL (never as an option)."""
    if not re.fullmatch(r"https?://[^\s'\"]+", url):
        r.problem(name, f"{url!r} is not an http(s) URL", f"use an https:// URL such as {AMI_TOOLS_URL!r}")


def tools_archive(r: Reading, name: str, source: Source) -> None:
    """The ami-tools archive: a URL, or a readable zip file on the controller."""
    if source.content is not None:
        r.problem(
            name, "content is not supported for the tools archive", "give {url = ...} or {local_file = ...}"
        )
    elif source.url is not None and source.url != AMI_TOOLS_URL:
        http_url(r, name, source.url)
    elif source.local_file is not None:
        path = Path(source.local_file)
        if not path.is_file() or not os.access(path, os.R_OK):
            r.problem(
                name,
                f"local_file {source.local_file!r} is not a readable file",
                "point local_file at the ec2-ami-tools zip you downloaded",
            )
        elif not zipfile.is_zipfile(path):
            r.problem(
                name,
                f"local_file {source.local_file!r} is not a zip archive",
                "give the ec2-ami-tools .zip as Amazon publishes it",
            )


def scratch_dir(r: Reading, name: str, value: str) -> None:
    """destination_dir: the image always excludes it, so a system directory would be missing from it."""
    comma_free(r, name, value)
    if value in PROTECTED_DIRS:
        r.problem(
            name,
            f"{value!r} is a system directory; the image excludes destination_dir",
            "use a scratch directory such as /tmp or /mnt",
        )


# Names S3 reserves: for internationalised domain names, its own internal use, access point aliases.
RESERVED_BUCKET_PREFIXES = ("xn--", "sthree-")
RESERVED_BUCKET_SUFFIXES = ("-s3alias", "--ol-s3")


def bucket_problem(name: str, bucket: str) -> Problem | None:
    """The problem with an S3 bucket name (given as setting or option `name`), or None for a valid one."""
    rules = []
    if not 3 <= len(bucket) <= 63:
        rules.append("must be 3 to 63 characters long")
    if not re.fullmatch(r"[a-z0-9.-]*", bucket):
        rules.append("may hold only lowercase letters, digits, '.' and '-'")
    if not (bucket[:1].isalnum() and bucket[-1:].isalnum()):
        rules.append("must start and end with a letter or digit")
    if ".." in bucket:
        rules.append("must have no '..'")
    try:
        ipaddress.ip_address(bucket)
        rules.append("must be a name, not an IP address")
    except ValueError:
        pass
    rules += [f"must not start with {p!r}" for p in RESERVED_BUCKET_PREFIXES if bucket.startswith(p)]
    rules += [f"must not end with {s!r}" for s in RESERVED_BUCKET_SUFFIXES if bucket.endswith(s)]
    if not rules:
        return None
    return Problem(
        name,
        f"{bucket!r} is not a valid S3 bucket name: a bucket name " + ", and ".join(rules),
        "choose a name that follows S3's bucket naming rules, e.g. 'acme-ami-bundles'",
    )


def bucket_name(r: Reading, name: str, bucket: str) -> None:
    """An S3 bucket name as S3's naming rules allow it (an empty one is only missing: the required
    check says so)."""
    problem = bucket_problem(name, bucket) if bucket else None
    if problem is not None:
        r.problems.append(problem)


# An S3/EC2-compatible endpoint: http(s), a host (and port), perhaps a path.
ENDPOINT_URL = r"https?://[^\s/]+(/\S*)?"


def endpoint_url_problem(name: str, url: str) -> Problem | None:
    """The problem with an endpoint URL (given as option `name`), or None for an http(s) URL with a host."""
    if re.fullmatch(ENDPOINT_URL, url):
        return None
    return Problem(
        name,
        f"{url!r} is not an http(s) URL",
        "give the endpoint as http(s)://HOST[:PORT], e.g. http://127.0.0.1:5000, or leave it out for AWS's",
    )


def key_prefix(r: Reading, row: Setting) -> str:
    """s3_path: a key prefix in the bucket, without leading or trailing slashes."""
    s3_path = (read_text(r, row.name, "") or "").strip("/")
    if s3_path and not re.fullmatch(r"[A-Za-z0-9!_.*'()/-]+", s3_path):
        r.problem(
            row.name,
            f"{s3_path!r} has characters unsafe in an S3 key prefix",
            "use letters, digits and ! _ . * ' ( ) - /",
        )
    return s3_path


def only_its_default(read: Reader, where: str) -> Reader:
    """A derived path a user may give only with its default value (the tools put the file there)."""

    def read_fixed(r: Reading, row: Setting) -> Any:
        expected = r.default(row)
        value = read(r, row)
        if value != expected:
            r.problem(row.name, f"{value!r} is not where {where}", f"remove it or set it to {expected!r}")
        return value

    return read_fixed


def block_device_mappings(r: Reading, row: Setting) -> tuple[tuple[str, str], ...]:
    """Instance-store device mappings: [{ device_name = "/dev/sdb", virtual_name = "ephemeral0" }]."""
    name = row.name
    value = r.given.get(name, [])
    example = 'block_device_mappings = [{ device_name = "/dev/sdb", virtual_name = "ephemeral0" }]'
    if not isinstance(value, (list, tuple)):
        r.problem(name, f"must be a list of tables, got {got(value)}", f"write {example}")
        return ()
    mappings = []
    for entry in value:
        table = {str(k).replace("-", "_"): v for k, v in entry.items()} if isinstance(entry, Mapping) else {}
        device, virtual = table.get("device_name"), table.get("virtual_name")
        if (
            set(table) != {"device_name", "virtual_name"}
            or not isinstance(device, str)
            or not re.fullmatch(r"/dev/[a-z0-9]+", device)
            or not isinstance(virtual, str)
            or not re.fullmatch(r"ephemeral\d+", virtual)
        ):
            r.problem(name, f"entry {toml_spelling(entry)} is not a device mapping", f"write {example}")
            continue
        mappings.append((device, virtual))
    return tuple(mappings)


def boot_mode(r: Reading, row: Setting) -> str | None:
    """RegisterImage's BootMode: one of the row's choices, or "uefi", which the rules refuse with the
    reason that fits the backing."""
    if r.given.get(row.name) == "uefi":
        return "uefi"
    return optional_choice(r, row)


def tag_table(most: int, allowed: str) -> Reader:
    """A reader of a table of tag keys to values, with AWS's limits (key 1-128, value at most 256)."""

    def read(r: Reading, row: Setting) -> tuple[tuple[str, str], ...]:
        name = row.name
        value = r.given.get(name, {})
        example = f'{name} = {{ team = "web", stage = "prod" }}'
        if not isinstance(value, Mapping):
            r.problem(name, f"must be a table of strings, got {got(value)}", f"write {example}")
            return ()
        tags = []
        for key, text in value.items():
            key = str(key)
            if not key:
                r.problem(name, "has an empty key", "give every tag a key of 1 to 128 characters")
            elif not isinstance(text, str):
                r.problem(f"{name}.{key}", f"must be a string, got {got(text)}", f'quote it: {key} = "..."')
            elif not 1 <= len(key) <= 128 or len(text) > 256:
                r.problem(
                    f"{name}.{key}", "is too long", "keep keys to 1-128 and values to 256 characters at most"
                )
            elif key.lower().startswith("aws:") or key == BUILT_BY_TAG:
                r.problem(
                    f"{name}.{key}",
                    "is a reserved tag key (aws: belongs to AWS, amidsl:built-by to amidsl)",
                    "choose another key",
                )
            elif not (re.fullmatch(allowed, key) and re.fullmatch(allowed, text)):
                r.problem(
                    f"{name}.{key}",
                    "has characters S3 does not allow in an object tag",
                    "use letters, digits, spaces and + - = . _ : / @",
                )
            else:
                tags.append((key, text))
        if len(tags) > most:
            r.problem(name, f"has {len(tags)} tags", f"give at most {most} (AWS's limit, amidsl's own aside)")
        return tuple(tags)

    return read


def kms_keys_by_region(r: Reading, row: Setting) -> tuple[tuple[str, str], ...]:
    """A table of regions AWS has to KMS key ARNs."""
    name = row.name
    value = r.given.get(name, {})
    if not isinstance(value, Mapping):
        example = f'{name} = {{ eu-west-1 = "arn:aws:kms:eu-west-1:123456789012:key/..." }}'
        r.problem(name, f"must be a table of regions to KMS key ARNs, got {got(value)}", f"write {example}")
        return ()
    keys = []
    for region, key in value.items():
        where = f"{name}.{region}"
        if not isinstance(key, str):
            r.problem(where, f"must be a string, got {got(key)}", f'quote it: {region} = "arn:aws:kms:..."')
        elif not re.fullmatch(KMS_KEY_ARN, key):
            r.problem(where, f"{key!r} is not a KMS key ARN", KMS_KEY_ARN_FIX)
        elif is_region(r, where, str(region)):
            keys.append((str(region), key))
    return tuple(keys)


def launch_permissions(r: Reading, row: Setting) -> tuple[str, ...]:
    """Who else may launch the image: account ids, organization ARNs and OU ARNs (public apart)."""
    user_id = r.value("user_id")
    entries = []
    for entry in read_text_list(r, row.name):
        account = entry.replace("-", "") if re.fullmatch(r"[\d-]+", entry) else entry
        if entry.lower() in ("all", "public"):
            r.problem(
                row.name,
                f"{entry!r} would make the image public",
                "to let every AWS account launch it, set public_image = true (not in this list)",
            )
        elif account == user_id:
            r.problem(
                row.name,
                f"{entry!r} is the image's own account, which can always launch it",
                "list only other accounts",
            )
        elif not (
            re.fullmatch(r"\d{12}", account) or ORGANIZATION_ARN.fullmatch(entry) or OU_ARN.fullmatch(entry)
        ):
            r.problem(
                row.name,
                f"{entry!r} is not an account id, an organization ARN or an organizational unit ARN",
                "give 12-digit account ids, arn:aws:organizations::ACCOUNT:organization/o-... or "
                "arn:aws:organizations::ACCOUNT:ou/o-.../ou-...",
            )
        else:
            entries.append(account)
    return tuple(dict.fromkeys(entries))


def copy_regions(r: Reading, row: Setting) -> tuple[str, ...]:
    """copy_to_regions: regions AWS has in the build's partition, other than the build's own, each once."""
    region = r.value("region")
    home = partition_of(region) if region else None  # no region: its own row's problem
    copies = read_text_list(r, row.name)
    for copy in copies:
        if not is_region(r, row.name, copy):
            continue
        theirs = partition_of(copy)
        if copy == region:
            r.problem(row.name, f"{copy!r} is the build's own region", "list only other regions")
        elif None not in (home, theirs) and theirs != home:
            r.problem(
                row.name,
                f"{copy!r} is in partition {theirs}, and the build's region {region} is in partition "
                f"{home}: CopyImage copies only within a partition",
                f"list only regions of partition {home}, or build in {copy}'s partition with settings of "
                "its own",
            )
    if len(set(copies)) != len(copies):
        r.problem(row.name, "lists a region twice", "list each region once")
    return copies
