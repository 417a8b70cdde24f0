from segroute.cli import main

main()
