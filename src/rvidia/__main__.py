from rvidia.cli import main

main()
