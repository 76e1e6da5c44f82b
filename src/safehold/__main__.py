from safehold.cli.entry import run

run()
