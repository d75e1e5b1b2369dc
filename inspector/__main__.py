from inspector.cli import main
import sys
sys.exit(main())
