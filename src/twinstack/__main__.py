from twinstack.cli import main

main()
