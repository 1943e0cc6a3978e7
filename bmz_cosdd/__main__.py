from bmz_cosdd.cli import main

main()
