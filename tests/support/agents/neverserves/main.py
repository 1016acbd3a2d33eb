"""Test agent whose fork point (the guarded ``asyncio.run``) returns and whose main.py then ends without serving:
no session of it can ever answer, forked or cold; a fork of it says why, and its version stops forking."""

import asyncio


async def main() -> None:
    await asyncio.sleep(0)


if __name__ == "__main__":
    asyncio.run(main())
