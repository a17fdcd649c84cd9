import sys

if "--webhooks" in sys.argv[1:]:
    from workers.webhook_worker import main  # torch-free: it never loads a model
else:
    from workers.worker import main

main()
