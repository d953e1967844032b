"""The device cgroup: which device nodes a container may create (m), read (r) and write (w).

The rules are the OCI spec's ``linux.resources.devices`` (``allow``, ``type`` a/c/b,
``major``, ``minor`` — None for any — and ``access``), applied in order, as runc does: a first
rule that denies everything, then what is allowed. On cgroup v1 they are lines written to
``devices.deny``/``devices.allow``; cgroup v2 has no such files, and the same rules become a
small eBPF program (BPF_PROG_TYPE_CGROUP_DEVICE) attached to the container's cgroup, which
the kernel runs on every open or mknod of a device node.
"""

from __future__ import annotations

import ctypes
import os
import struct
from pathlib import Path
from typing import Any

from pyengine.errors import DriverError

Rule = dict[str, Any]


def _field(value: Any) -> str:
    return "*" if value is None or value == -1 else str(int(value))


def v1_writes(rules: list[Rule]) -> list[tuple[str, str]]:
    """(file, line) pairs for cgroup v1, in order."""
    writes = []
    for rule in rules:
        kind = rule.get("type") or "a"
        line = "a" if kind == "a" else f"{kind} {_field(rule.get('major'))}:{_field(rule.get('minor'))} " \
                                       f"{rule.get('access') or 'rwm'}"
        writes.append(("devices.allow" if rule.get("allow") else "devices.deny", line))
    return writes


def allows_everything(rules: list[Rule]) -> bool:
    """True when the last rule allows every access to every device (``--privileged``)."""
    last = rules[-1] if rules else {}
    every_device = (last.get("type") or "a") == "a" and set(last.get("access") or "rwm") >= set("rwm")
    return bool(last.get("allow")) and every_device


# -- cgroup v2: an eBPF program ------------------------------------------------------------
# struct bpf_cgroup_dev_ctx { u32 access_type; /* access << 16 | type */ u32 major; u32 minor; }
_DEV_TYPE = {"b": 1, "c": 2}                     # BPF_DEVCG_DEV_BLOCK, BPF_DEVCG_DEV_CHAR
_ACCESS = {"m": 1, "r": 2, "w": 4}               # BPF_DEVCG_ACC_MKNOD, _READ, _WRITE
_LDX_W, _ALU32_AND_K, _ALU32_RSH_K, _ALU32_MOV_X = 0x61, 0x54, 0x74, 0xBC
_JNE_K, _MOV64_K, _EXIT = 0x55, 0xB7, 0x95
_R0, _R1, _R2, _R3, _R4, _R5, _R6 = range(7)


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


def bpf_program(rules: list[Rule]) -> bytes:
    """The instructions of a device program for ``rules``: a deny-everything first rule, then
    allows. The program returns 1 (allow) when an allow rule matches type, major, minor and
    covers the access asked for, else 0."""
    if not rules or rules[0].get("allow") or (rules[0].get("type") or "a") != "a":
        raise DriverError("the device rules must start by denying everything (runc's form)")
    if any(not rule.get("allow") for rule in rules[1:]):
        raise DriverError("device deny rules after the first are not supported on cgroup v2")
    code = [
        _insn(_LDX_W, _R2, _R1, 0), _insn(_ALU32_AND_K, _R2, imm=0xFFFF),      # r2 = type
        _insn(_LDX_W, _R3, _R1, 0), _insn(_ALU32_RSH_K, _R3, imm=16),          # r3 = access
        _insn(_LDX_W, _R4, _R1, 4), _insn(_LDX_W, _R5, _R1, 8),                # r4, r5 = major, minor
    ]
    for rule in rules[1:]:
        tests: list[tuple[int, int]] = []
        kind = rule.get("type") or "a"
        if kind != "a":
            tests.append((_R2, _DEV_TYPE[kind]))
        for register, key in ((_R4, "major"), (_R5, "minor")):
            if rule.get(key) is not None and rule[key] != -1:
                tests.append((register, int(rule[key])))
        granted = sum(_ACCESS[c] for c in set(rule.get("access") or "rwm"))
        block: list[tuple[int, int, int, int]] = []  # (code, dst, src, imm); jumps patched below
        for register, value in tests:
            block.append((_JNE_K, register, 0, value))
        block += [(_ALU32_MOV_X, _R6, _R3, 0), (_ALU32_AND_K, _R6, 0, ~granted & 0xFFFF),
                  (_JNE_K, _R6, 0, 0), (_MOV64_K, _R0, 0, 1), (_EXIT, 0, 0, 0)]
        for index, (op, dst, src, imm) in enumerate(block):
            # a failed test skips the rest of this rule's block
            code.append(_insn(op, dst, src, len(block) - index - 1 if op == _JNE_K else 0, imm))
    code += [_insn(_MOV64_K, _R0, imm=0), _insn(_EXIT)]
    return b"".join(code)


_BPF_PROG_LOAD, _BPF_PROG_ATTACH = 5, 8
_BPF_PROG_TYPE_CGROUP_DEVICE, _BPF_CGROUP_DEVICE, _BPF_F_ALLOW_MULTI = 15, 6, 2


def attach_program(cgroup: Path, rules: list[Rule]) -> None:
    """Load the rules' program and attach it to ``cgroup`` (with BPF_F_ALLOW_MULTI: programs
    of the cgroups above still run, and all must allow). The attachment lives as long as the
    cgroup; the program's fd is closed here."""
    program = bpf_program(rules)
    instructions = ctypes.create_string_buffer(program, len(program))
    license_ = ctypes.create_string_buffer(b"Apache-2.0")
    log = ctypes.create_string_buffer(65536)  # the verifier's reasons, should it refuse
    attr = struct.pack("<IIQQIIQII16sII", _BPF_PROG_TYPE_CGROUP_DEVICE, len(program) // 8,
                       ctypes.addressof(instructions), ctypes.addressof(license_), 1, len(log),
                       ctypes.addressof(log), 0, 0, b"pyengine_dev", 0, _BPF_CGROUP_DEVICE).ljust(128, b"\0")
    from pyengine.runtime.kernel import bpf

    try:
        prog_fd = bpf(_BPF_PROG_LOAD, attr)
    except OSError as exc:
        detail = log.value.decode(errors="replace").strip().splitlines()
        raise DriverError(f"cannot load the device program for {cgroup}: {os.strerror(exc.errno or 0)}"
                          + (f" ({detail[-1]})" if detail else "")) from None
    try:
        cgroup_fd = os.open(cgroup, os.O_RDONLY | os.O_DIRECTORY)
        try:
            bpf(_BPF_PROG_ATTACH, struct.pack("<IIIII", cgroup_fd, prog_fd, _BPF_CGROUP_DEVICE,
                                               _BPF_F_ALLOW_MULTI, 0).ljust(32, b"\0"))
        finally:
            os.close(cgroup_fd)
    except OSError as exc:
        raise DriverError(f"cannot attach the device program to {cgroup}: {os.strerror(exc.errno or 0)}") from None
    finally:
        os.close(prog_fd)
