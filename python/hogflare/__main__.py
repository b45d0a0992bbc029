from hogflare.cli import main

main()
