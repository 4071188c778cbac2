"""Board files: every one loads, the data agrees with the compiler, malformed files are refused."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from mcuq.boards import BOARDS_DIR, DEFAULT_BOARD, all_boards, load_board
from mcuq.errors import BoardError

GCC = shutil.which("arm-none-eabi-gcc")


def test_all_boards_load_with_one_default():
    boards = all_boards()
    assert {b.name for b in boards} >= {"stm32f7", "stm32f746-disco", "qemu-m7", "qemu-m4", "qemu-m55",
                                        "qemu-stm32f4"}
    assert [b.name for b in boards if b.default] == [DEFAULT_BOARD]
    for b in boards:
        assert b.emulated == (b.usb is None), b.name
        assert b.emulated == (not b.flash_methods), b.name


def test_known_facts():
    f7 = load_board("stm32f7")
    assert (f7.flash_bytes, f7.ram_bytes, f7.clock_hz) == (2 << 20, 512 << 10, 216_000_000)
    assert (f7.uart.peripheral, f7.pyocd_target, f7.usb.vid) == ("USART3", "stm32f767zi", 0x0483)
    disco = load_board("stm32f746-disco")
    assert (disco.flash_bytes, disco.ram_bytes, disco.fpu) == (1 << 20, 320 << 10, "sp")
    assert "pyocd" not in disco.flash_methods and disco.openocd_config == "board/stm32f7discovery.cfg"
    m55 = load_board("qemu-m55")
    assert (m55.flash_origin, m55.ram_origin, m55.uart.base, m55.mve) == (0x10000000, 0x30000000, 0x59303000, True)
    assert load_board("qemu-stm32f4").uart.driver == "stm32f4-usart"


def test_unknown_board_lists_known():
    with pytest.raises(BoardError, match=r"unknown board 'nope'; known: .*qemu-m7.*stm32f7"):
        load_board("nope")


@pytest.mark.skipif(GCC is None, reason="arm-none-eabi-gcc not installed")
@pytest.mark.parametrize("board", all_boards(), ids=lambda b: b.name)
def test_cflags_match_declared_features(board):
    """The compiler's own feature macros for board.cflags must agree with fpu / dsp / mve."""
    out = subprocess.run([GCC, *board.cflags, "-E", "-dM", "-x", "c", "/dev/null"],
                         capture_output=True, text=True, check=True).stdout
    macros = dict(re.findall(r"^#define (\w+) ?(.*)$", out, re.M))
    assert ("__ARM_FEATURE_DSP" in macros) == board.dsp
    assert ("__ARM_FEATURE_MVE" in macros) == board.mve
    fp = int(macros.get("__ARM_FP", "0"), 0)
    assert {"none": 0, "sp": 4}.get(board.fpu, 0xC) == fp & 0xC  # bit 2 single, bit 3 double
    multilib = subprocess.run([GCC, *board.cflags, "-print-multi-directory"],
                              capture_output=True, text=True, check=True).stdout.strip()
    assert multilib.endswith("/hard") == (board.mfloat_abi == "hard"), multilib


def _write_variant(tmp_path: Path, edit) -> Path:
    text = (BOARDS_DIR / "qemu-m7.toml").read_text()
    edited = edit(text)
    assert edited != text, "the edit must change the board file"
    (tmp_path / "qemu-m7.toml").write_text(edited)
    return tmp_path


@pytest.mark.parametrize("edit, field", [
    (lambda s: s.replace("ram_bytes = 4_194_304", 'ram_bytes = "4M"'), "ram_bytes"),
    (lambda s: s.replace("dsp = true", "dsp = 1"), "dsp"),
    (lambda s: s.replace("clock_hz = 25_000_000\n", ""), "clock_hz"),
    (lambda s: s.replace("mve = false", "mve = false\nram_size = 4"), "ram_size"),
    (lambda s: s.replace('fpu = "dp"', 'fpu = "double"'), "fpu"),
    (lambda s: s.replace('name = "qemu-m7"', 'name = "qemu-m8"'), "name"),
    (lambda s: s.replace("base = 0x40004000", "base = true"), "uart.base"),
    (lambda s: s.replace('driver = "cmsdk"', 'driver = "pl011"'), "uart.driver"),
    (lambda s: s.replace("flash_methods = []", 'flash_methods = ["st-flash"]'), "flash_methods"),
    (lambda s: s.replace("flash_methods = []", 'flash_methods = ["pyocd"]'), "pyocd_target"),
    (lambda s: s.replace("ram_origin = 0x20000000", "ram_origin = 0x00100000"), "ram_origin"),
])
def test_malformed_board_names_file_and_field(tmp_path, edit, field):
    d = _write_variant(tmp_path, edit)
    with pytest.raises(BoardError, match=re.escape(f"qemu-m7.toml: ") + ".*" + re.escape(f"'{field}'")):
        load_board("qemu-m7", d)


def test_invalid_toml_names_file(tmp_path):
    d = _write_variant(tmp_path, lambda s: s.replace("dsp = true", "dsp = "))
    with pytest.raises(BoardError, match=r"qemu-m7\.toml: not valid TOML"):
        load_board("qemu-m7", d)
