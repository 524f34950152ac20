#!/usr/bin/env python3
# image/recovery: recovery.py — the seeds' "recovery.py -r --default --reboot <image>", run by tandem-recovery's flatten.
"""Restores an appliance disk to the factory default, in the form the JSA guide's runbook types:

  ./recovery.py -r --default --reboot <disk.img> [--target DISK] [--no-act-reboot]

-r --default is `tandem-recovery flatten --image <disk.img> --target DISK`: the
operator types "flatten", then the disk gets a new partition table, the OS in
both slots, the factory config and an empty store. --reboot runs `systemctl
reboot` after a successful write; --no-act-reboot (or TANDEM_RECOVERY_NO_REBOOT=1
in the environment) only says it would. Without --target the disk is the one the
system runs from, which is always refused: boot a rescue system, or attach the
disk to another machine, and pass it as --target. tandem-recovery must be in the
same directory as this file.
"""

import argparse
import importlib.machinery
import importlib.util
import os
import subprocess
import sys

# No __pycache__ beside the scripts: they are copied around and run from anywhere.
sys.dont_write_bytecode = True
here = os.path.dirname(os.path.realpath(__file__))
_loader = importlib.machinery.SourceFileLoader("tandem_recovery", os.path.join(here, "tandem-recovery"))
_spec = importlib.util.spec_from_loader("tandem_recovery", _loader)
tr = importlib.util.module_from_spec(_spec)
_loader.exec_module(tr)


def parser():
    p = argparse.ArgumentParser(prog="recovery.py", description=__doc__.split("\n\n")[0],
                                epilog="exit status: 0 done, 1 refused or failed, 2 usage")
    p.add_argument("-r", "--restore", action="store_true", required=True, help="restore the disk (required)")
    p.add_argument("--default", action="store_true",
                   help="to the factory default: flatten (the only restore this tool offers)")
    p.add_argument("--reboot", action="store_true", help="run `systemctl reboot` once the disk is written")
    p.add_argument("--no-act-reboot", action="store_true",
                   help="with --reboot, say so but do not reboot (tests; also TANDEM_RECOVERY_NO_REBOOT=1)")
    p.add_argument("--target", help="the disk to write (default: the disk the system runs from, which is refused)")
    p.add_argument("image", help="a built disk.img with SHA256SUMS beside it")
    return p


def main(argv=None):
    p = parser()
    a = p.parse_args(argv)
    if not a.default:
        p.error("only -r --default (factory default, i.e. flatten) is offered; "
                "to rewrite one OS slot use: tandem-recovery reinstall --image IMAGE --target DISK --slot root_a|root_b")
    no_reboot = a.no_act_reboot or os.environ.get("TANDEM_RECOVERY_NO_REBOOT", "") not in ("", "0")

    def restore():
        target = a.target
        if target is None:
            disks = tr.running_disk()
            if not disks:
                raise tr.Refused("no --target given and the disk the system runs from cannot be found; "
                                 "pass the disk to restore as --target")
            target = tr.dev_name(disks[0])
            tr.refuse_in_use(target, f"{target} (no --target given)")
        tr.refuse_in_use(target)
        tr.do_flatten(a.image, target)
        if a.reboot:
            if no_reboot:
                tr.say("--reboot: not rebooting (--no-act-reboot or TANDEM_RECOVERY_NO_REBOOT)")
            else:
                tr.say("--reboot: systemctl reboot")
                subprocess.run(["systemctl", "reboot"], check=False)

    return tr.main(fn=restore)


if __name__ == "__main__":
    sys.exit(main())
