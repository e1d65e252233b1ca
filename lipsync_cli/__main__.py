from lipsync_cli.cli.entry import main

main()
