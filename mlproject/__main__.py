from mlproject.cli import main

main()
