"""PlatformIO pre-script (platformio.ini): build the firmware for the pack directory named by
$MCUQ_PACK with the flags and linker script `mcuq build` recorded there, and compile its model."""

import json
import os
from pathlib import Path

Import("env")

pack = Path(os.environ.get("MCUQ_PACK", "")).resolve()
record = pack / "build" / "build.json"
if not os.environ.get("MCUQ_PACK") or not record.is_file():
    print(f"error: set MCUQ_PACK to a pack directory built with `mcuq build` (no {record})")
    env.Exit(1)
built = json.loads(record.read_text())
if built["board"] != env["PIOENV"]:
    print(f"error: {pack} is built for {built['board']}; run mcuq build {pack} --board {env['PIOENV']}")
    env.Exit(1)
for flag in built["cflags"]:
    if flag.startswith("-D"):  # string macros need SCons' quoting for the shell
        name, _, value = flag[2:].partition("=")
        quoted = value.startswith('"')
        env.Append(CPPDEFINES=[(name, env.StringifyMacro(value[1:-1]) if quoted else value)])
    elif flag.startswith("-I"):
        env.Append(CPPPATH=[flag[2:]])
    else:
        env.Append(CCFLAGS=[flag])
env.Append(LINKFLAGS=built["ldflags"])
env.Replace(LDSCRIPT_PATH=str(pack / "build" / "mcuq.ld"))
env.BuildSources("$BUILD_DIR/model", str(pack / "src"))
