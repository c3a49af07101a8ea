from gridline.cli import main

main()
