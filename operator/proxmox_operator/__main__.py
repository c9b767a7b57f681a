from proxmox_operator.cli import main

raise SystemExit(main())
