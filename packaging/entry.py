"""The frozen app's entry point (PyInstaller runs this, not app/launcher.py directly).

In a bundle, ``sys.executable`` is this app's own binary, not a Python interpreter, so the
engine workers the app starts as ``sys.executable -m engine <command> ...`` arrive here: those
arguments run the engine CLI, and the GGUF writer's encoding workers (``-m
engine.export.piece_worker``) their loop; anything else is the `tailor` launcher (the window).
"""
import multiprocessing
import sys


def main() -> int:
    multiprocessing.freeze_support()
    args = sys.argv[1:]
    if args[:2] == ["-m", "engine"]:
        from engine.cli import main as engine_main

        return engine_main(args[2:])
    if args[:2] == ["-m", "engine.export.piece_worker"]:  # the GGUF writer's processes
        from engine.export.piece_worker import main as piece_worker_main

        return piece_worker_main()
    from app.launcher import main as launcher_main

    return launcher_main(args)


if __name__ == "__main__":
    sys.exit(main())
