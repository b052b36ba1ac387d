from dockwright.cli.main import run

run()
