from lipsync_cli.cli.app import main

main()
